"""Exact per-dimension lower median of a token stream that can be fed again, in few passes.

The official MIR code replaces outlier rows by `torch.median(X, dim=0)`: per dimension the lower
median sorted[(n - 1) // 2] of every token, in the tokens' dtype. Streaming must not keep every
token, so the median is found by bracketing:

1. the first pass keeps a seeded uniform sample of m tokens (`Reservoir`);
2. per dimension, edges are taken from the sample's order statistics: a bracket around the
   sample rank of the median, `z` (default 6) standard deviations of that rank wide on each side
   (hypergeometric, with the finite-population factor), plus a grid of `grid` sample quantiles;
3. the next pass counts, per dimension, the tokens below and at every edge (exact histograms)
   and keeps the values strictly inside the bracket. The median is then an edge value (ties) or
   the right order statistic of the kept values: exact;
4. a dimension whose bracket missed (probability ~1e-9 each) learns from the histogram which
   grid interval holds its median; one further pass keeps that interval's values and always
   resolves it.

Passes beyond the first: one normally, two at most. Memory, per token set of d dimensions with
b-byte values: the sample, m d b (first pass; freed once the edges are taken); then the kept
values, about N d b * 2 z sqrt(p (1 - p) (N - m) / (N - 1) / m) ~ z N d b / sqrt(m) for N >> m,
plus (grid + 3) d edges and 2 (grid + 4) d int64 counts. The kept values grow with N (as
N / sqrt(m)); the peak max(m, z N / sqrt(m)) d b is smallest at m ~ (z N)^(2/3).
"""

from __future__ import annotations

import math

import torch

from modalign.errors import DataError
from modalign.metrics.state import Stateful

__all__ = ["BRACKET_Z", "GRID", "MEDIAN_MODES", "MedianSearch", "bracket_positions"]

MEDIAN_MODES = ("exact", "estimate")
BRACKET_Z = 6.0  # half-width of the bracket in standard deviations of the median's sample rank
GRID = 32  # sample quantiles between which a missed median is located
_BLOCK = 1 << 20  # values per transient block: bounds the temporaries (4 MiB in float32)


def bracket_positions(
    m: int, n: int, z: float = BRACKET_Z, grid: int = GRID
) -> tuple[list[int], int]:
    """Sample ranks of the edges, and the index of the edge opening the bracket window.

    The window is the open interval between edge `window` and edge `window + 1` (-1: from
    -inf; the last edge: to +inf). Grid ranks inside the bracket are left out.

    Args:
        m: sample size; n: number of tokens (m <= n); z: bracket half-width in standard
        deviations; grid: number of grid intervals over the sample.

    Returns:
        (sorted sample ranks of the edges, window index).

    >>> pos, window = bracket_positions(4096, 57_600)
    >>> pos[window], pos[window + 1]  # the bracket around the median's expected rank 2047.9
    (1861, 2234)
    """
    rank = (n - 1) // 2
    p = (rank + 1) / (n + 1)
    centre = p * (m + 1) - 1  # expected sample rank of the median
    fpc = (n - m) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(m * p * (1 - p) * fpc) + 1
    lo, hi = math.floor(centre - half), math.ceil(centre + half)
    grid_ranks = {round(i * (m - 1) / grid) for i in range(grid + 1)} if grid else set()
    ends = {q for q in (lo, hi) if 0 <= q < m}
    pos = sorted({q for q in grid_ranks if q < lo or q > hi} | ends)
    return pos, (pos.index(lo) if lo >= 0 else -1)


def _order_stats(sample: torch.Tensor, pos: list[int]) -> torch.Tensor:
    """Per-column order statistics of sample (m, d) at ranks pos, as (d, len(pos))."""
    m, d = sample.shape
    out = torch.empty(d, len(pos), dtype=sample.dtype, device=sample.device)
    idx = torch.tensor(pos, dtype=torch.int64, device=sample.device)
    step = max(1, _BLOCK // 4 // max(m, 1))  # sort's int64 indices cost twice the values
    for c in range(0, d, step):
        block = sample[:, c : c + step].sort(dim=0).values  # (m, blk)
        out[c : c + step] = block.index_select(0, idx).T
    return out


def _kth_per_column(
    chunks: list[torch.Tensor], counts: torch.Tensor, select: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """The k[j]-th smallest (0-based) kept value of every selected column j.

    chunks: the kept values; counts (rows, u): row after row, how many values the stream of
    chunks holds per column (grouped by column within a row; a chunk holds whole rows: one per
    batch while feeding, all of them after a distributed reduction).

    Works on column blocks of a dense matrix in which column j gets K - k[j] copies of -inf
    (K = the block's largest k) besides its values and +inf padding, so that one `kthvalue` at
    rank K answers every column: temporaries stay within two blocks of `_BLOCK` values,
    whatever N and d.
    """
    u = counts.shape[1]
    counts = counts.to(torch.int64)
    dev, dtype = chunks[0].device, chunks[0].dtype
    where = _row_offsets(chunks, counts.sum(1).tolist())
    total = counts.sum(0)  # (u,)
    k = torch.where(select, k, 0)
    need = total + torch.where(select, k.max() - k, 0)  # rows a column may need (upper bound)
    starts = torch.cumsum(counts, 1) - counts  # (c, u): a column's offset in its chunk
    out = torch.empty(u, dtype=dtype, device=dev)
    rows_max = max(int(need.max()), 1)
    step = max(1, _BLOCK // rows_max)
    for c0 in range(0, u, step):
        c1 = min(u, c0 + step)
        sel = select[c0:c1]
        if not sel.any():
            continue
        kb = k[c0:c1]
        top = int(kb[sel].max())
        pad = torch.where(sel, top - kb, 0)  # -inf rows above each column's values
        rows = int((pad + total[c0:c1]).max()) + 1  # unselected columns' values too
        dense = torch.full((rows, c1 - c0), float("inf"), dtype=dtype, device=dev)
        dense[torch.arange(rows, device=dev)[:, None] < pad[None, :]] = float("-inf")
        filled = pad.clone()
        cols = torch.arange(c1 - c0, device=dev)
        for i, (chunk, offset) in enumerate(where):
            n_i = counts[i, c0:c1]
            if not int(n_i.sum()):
                continue
            first = offset + int(starts[i, c0])
            seg = chunks[chunk][first : first + int(n_i.sum())]  # this block's values, by column
            col = torch.repeat_interleave(cols, n_i)
            within = torch.arange(seg.shape[0], device=dev) - (torch.cumsum(n_i, 0) - n_i)[col]
            dense[filled[col] + within, col] = seg
            filled += n_i
        out[c0:c1] = torch.kthvalue(dense, top + 1, dim=0).values  # 1-based rank
    return out[select]


def _row_offsets(chunks: list[torch.Tensor], row_totals: list[int]) -> list[tuple[int, int]]:
    """(chunk index, offset in it) where each count row's values start."""
    out, chunk, pos = [], 0, 0
    for total in row_totals:
        while total and pos + total > chunks[chunk].shape[0]:
            if pos != chunks[chunk].shape[0]:
                raise RuntimeError("median search: kept values do not match their counts")
            chunk, pos = chunk + 1, 0
        out.append((chunk, pos))
        pos += total
    return out


class MedianSearch(Stateful):
    """Exact per-dimension lower median of n tokens, found over passes that re-feed them.

    Args:
        n: the number of tokens (of every pass).
        sample: a uniform sample without replacement of them (m, d), m <= n, in their dtype.
        z: bracket half-width, in standard deviations of the median's sample rank (default
            `BRACKET_Z`).
        grid: number of sample-quantile intervals that locate a missed median.

    Protocol: `update` with every token, then `needs_pass()`; while True, `begin_pass()` and
    feed every token again. `result()` is the median vector (d,) in the tokens' dtype.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5001, 3, generator=g)
    >>> search = MedianSearch(5001, x[torch.randperm(5001, generator=g)[:500]])
    >>> search.update(x[:2000]); search.update(x[2000:])
    >>> search.needs_pass()
    False
    >>> torch.equal(search.result(), x.sort(dim=0).values[2500])
    True
    """

    def __init__(
        self, n: int, sample: torch.Tensor, *, z: float | None = None, grid: int = GRID
    ) -> None:
        z = BRACKET_Z if z is None else z  # looked up per call: tests narrow it to force misses
        m, d = sample.shape
        if not 1 <= m <= n:
            raise ValueError(f"a sample of {m} rows cannot come from {n} tokens")
        self.n, self.rank = n, (n - 1) // 2
        self.dtype, self.device = sample.dtype, sample.device
        pos, window = bracket_positions(m, n, z, grid) if m < n else ([], -1)
        self.edges = _order_stats(sample, pos)  # (d, B) ascending per row
        self.window = torch.full((d,), window, dtype=torch.int64, device=self.device)
        self.value = torch.zeros(d, dtype=self.dtype, device=self.device)
        self.resolved = torch.zeros(d, dtype=torch.bool, device=self.device)
        self.passes = 0  # passes begun
        self.add_state("seen", 0, "sum")
        self.add_state("hist_lower", None, "sum")  # histogram of #(edges < v), (u, B + 1)
        self.add_state("hist_equal", None, "sum")  # the same, of the tokens equal to an edge
        self.add_state("kept_values", [], "cat")  # values inside the window, per chunk
        self.add_state("kept_counts", [], "cat")  # (1, u) per chunk: how many per column
        if m == n:  # the sample is every token
            self.value = sample.sort(dim=0).values[self.rank].clone()
            self.resolved[:] = True
            self._settled, self._missed = True, self.resolved.nonzero().squeeze(1)[:0]
        else:
            self._plan(torch.arange(d, device=self.device))

    @property
    def dim(self) -> int:
        return self.edges.shape[0]

    def _plan(self, cols: torch.Tensor) -> None:
        """Reset the per-pass state to search the columns `cols` in the next pass."""
        self.cols = cols
        self._edges = self.edges.index_select(0, cols).contiguous()  # (u, B)
        self._window = self.window.index_select(0, cols)  # (u,)
        u, b = self._edges.shape
        self.seen = 0
        self.hist_lower = torch.zeros(u, b + 1, dtype=torch.int64, device=self.device)
        self.hist_equal = torch.zeros(u, b + 1, dtype=torch.int64, device=self.device)
        self.kept_values = [torch.empty(0, dtype=self.dtype, device=self.device)]
        self.kept_counts = [torch.empty(0, u, dtype=torch.int32, device=self.device)]
        self._settled = False
        self.passes += 1

    def update(self, x: torch.Tensor) -> None:
        """Count tokens x (n, d) against the edges and keep those inside the window."""
        if self._settled:
            raise RuntimeError("this median pass is settled: call begin_pass() before feeding")
        xs = x.to(self.dtype).index_select(1, self.cols)  # (n, u)
        n, u = xs.shape
        b = self._edges.shape[1]
        step = max(1, _BLOCK // 4 // max(n, 1))  # bounds the (blk, n) index temporaries
        vals, counts = [], []
        for c in range(0, u, step):
            xt = xs[:, c : c + step].T.contiguous()  # (blk, n)
            edges = self._edges[c : c + step]
            blk = xt.shape[0]
            lower = torch.searchsorted(edges, xt, out_int32=True)  # (blk, n): #(edges < v)
            rows = torch.arange(blk, device=xt.device, dtype=torch.int32)[:, None]
            flat = lower + rows * (b + 1)  # (blk, n) bucket in the flattened (blk, B + 1) hist
            size = blk * (b + 1)
            self.hist_lower[c : c + blk] += torch.bincount(flat.flatten(), minlength=size).view(
                blk, -1
            )
            eq = torch.zeros_like(xt, dtype=torch.bool)
            if b:  # v equals an edge iff it equals the first edge >= v, E[lower]
                at = (lower.clamp(max=b - 1) + rows * b).flatten()
                eq = (edges.flatten().index_select(0, at).view_as(xt) == xt) & (lower < b)
                self.hist_equal[c : c + blk] += torch.bincount(flat[eq], minlength=size).view(
                    blk, -1
                )
            w = (self._window[c : c + step] + 1).to(torch.int32)[:, None]
            inside = (lower == w) & ~eq  # strictly between the window's edges
            vals.append(xt[inside])  # grouped by column
            counts.append(inside.sum(1, dtype=torch.int32))
        self.kept_values.append(torch.cat(vals))
        self.kept_counts.append(torch.cat(counts).unsqueeze(0))
        self.seen += n

    def settle(self) -> None:
        """Resolve every column the finished pass determines; locate the misses' intervals."""
        if self._settled:
            return
        if self.seen != self.n:
            raise DataError(
                f"a median pass saw {self.seen} tokens, the first pass {self.n}: "
                "the same tokens must be fed again"
            )
        u, b = self._edges.shape
        r = self.rank
        upto = self.hist_lower.cumsum(1)[:, :b]  # (u, B): #(v <= E_k)
        first = torch.searchsorted(self._edges, self._edges)  # first edge of each tie group
        below = upto - self.hist_equal.gather(1, first)  # (u, B): #(v < E_k)
        at_edge = (below <= r) & (upto > r)  # sorted position r holds the value E_k
        on_edge = at_edge.any(1)
        k_edge = at_edge.to(torch.uint8).argmax(1) if b else on_edge.long()
        interval = (upto <= r).sum(1) - 1  # else the median lies in (E_a, E_a+1), a >= -1
        inside = ~on_edge & (interval == self._window)
        # tokens up to the interval's left edge, and before its right edge (E_-1 = -inf, E_B = inf)
        start = torch.cat([upto.new_zeros(u, 1), upto], 1).gather(1, interval[:, None] + 1)[:, 0]
        stop = torch.cat([below, below.new_full((u, 1), self.n)], 1)
        stop = stop.gather(1, interval[:, None] + 1)[:, 0]
        counts = torch.cat(self.kept_counts)
        kept = counts.sum(0, dtype=torch.int64)
        if not torch.equal(kept[inside], (stop - start)[inside]):
            raise RuntimeError("median search: kept values disagree with the histogram")
        value = self.value.index_select(0, self.cols)
        if on_edge.any():
            value[on_edge] = self._edges[on_edge, k_edge[on_edge]]
        if inside.any():
            value[inside] = _kth_per_column(self.kept_values, counts, inside, r - start)
        done = on_edge | inside
        self.value[self.cols] = value
        self.resolved[self.cols[done]] = True
        self.window[self.cols[~done]] = interval[~done]
        self._missed = self.cols[~done]
        self.kept_values = [self.kept_values[0].new_empty(0)]  # free the kept values
        self.kept_counts = [counts.new_empty(0, u)]
        self._settled = True

    def needs_pass(self) -> bool:
        """After a pass was fed: True while some column's median is still unknown."""
        self.settle()
        return bool(self._missed.numel())

    def begin_pass(self) -> None:
        """Plan the next pass over the unresolved columns (their interval is now known)."""
        if not self.needs_pass():
            raise RuntimeError("every median is resolved: no further pass is needed")
        self._plan(self._missed)

    def result(self) -> torch.Tensor:
        """The exact per-dimension lower median (d,), in the tokens' dtype."""
        if self.needs_pass():
            raise RuntimeError("the median needs another pass over the same tokens")
        return self.value
