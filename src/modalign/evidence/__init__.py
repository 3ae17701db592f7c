"""Evidence: does a measure of a pre-trained checkpoint predict its post-SFT score?"""
