"""A benchmark run with the fake answerer, as its own process (plain or under torchrun).

python tests/eval_worker.py DATASET DATA OUT [--delay S] [--method M] [--batch-size N]
"""

import argparse
import json
import os

from eval_fixtures import FakeAnswerer

from focus_modules.eval import load_dataset, run_eval

parser = argparse.ArgumentParser()
parser.add_argument("dataset")
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--method", default="focus")
parser.add_argument("--batch-size", type=int, default=1)
args = parser.parse_args()
answerer = FakeAnswerer(delay=args.delay)
run_eval(
    load_dataset(args.dataset, args.data),
    answerer,
    args.out,
    dataset=args.dataset,
    method=args.method,
    batch_size=args.batch_size,
    progress=False,
)
# which questions this process sent to the model, for the sharding test
with open(f"{args.out}.asked{os.environ.get('RANK', '0')}", "w") as handle:
    json.dump([q for call in answerer.calls for q in call], handle)
