"""Peak RSS of streaming ONE mixture in a fresh process, with a chosen vocabulary (a companion of data_pipeline.py).

    python benchmarks/data_pipeline_rss_probe.py spm32k gen_train_mixture 30000
    python benchmarks/data_pipeline_rss_probe.py generated flan2022_cot 30000

data_pipeline.py's rss figure streams flan2022_cot and gen_train_mixture together after two throughput runs in
the same process; this probe separates the two mixtures, each in its own process, to say which one grows with
the vocabulary. Prints one JSON line.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import data_pipeline as dp  # noqa: E402


class _Args:
    batch_size = 8
    seed = 0
    max_open_rows = 64


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    vocab_choice, mixture, n = argv[0], argv[1], int(argv[2])
    dp.pin_threads(1)
    vocabulary, _ = dp.load_vocabulary(vocab_choice)
    dp.register(vocabulary)
    rss0 = dp._rss_bytes()
    load0 = os.getloadavg()
    r = dp.measure(dp.our_batches(mixture, _Args), n, 0, "probe", sample_rss=True)
    print(json.dumps({"vocab": vocab_choice, "mixture": mixture, "examples": r["examples"],
                      "rss_after_registration_gb": rss0 / 1e9, "peak_sampled_gb": r["peak_rss_sampled_bytes"] / 1e9,
                      "ru_maxrss_gb": dp._peak_rss_bytes() / 1e9, "load_at_start": load0,
                      "load_at_end": os.getloadavg()}))


if __name__ == "__main__":
    main(sys.argv[1:])
