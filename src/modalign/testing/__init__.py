"""Test scaffolding shipped with the package (for modalign's tests, benchmarks and users' own tests):
tiny random models of every supported family, built offline from configs. Not used at runtime."""
