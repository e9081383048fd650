"""`mfn tune`: measure a model on the real server under trial settings and choose the fastest within a latency
budget (mfn.tuning.choice), written to a tuned file that `mfn package --tuned` applies (mfn.tuning.tuned)."""
