"""Where ``sslunet_predict``'s time goes: each stage of each case timed on its own (issue 12).

``sslunet_predict`` overlaps reading, the network and exporting (a reader thread, export
processes); here the stages run one after the other in one process, so each gets its own time:
start-up (imports, loading the model), reading + preprocessing, the sliding window (network
calls and blending apart), and the export (resampling back, softmax, argmax, writing). Run for
each precision the machine has (fp32, and bf16 on CPUs with AMX) and with and without TTA.

Usage::

    python benchmarks/profile_predict.py -m MODEL_DIR -i IMAGES [--cases 3] [--device cpu]

Results: ``benchmarks/results/profile_predict_<device>.json`` and a table, seconds per case
(medians over the cases).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sslunet.inference.api import list_input_cases, read_case  # noqa: E402
from sslunet.inference.models import checkpoint_files, load_model  # noqa: E402
from sslunet.inference.predictor import (  # noqa: E402
    export_logits,
    inference_config,
    network_predictor,
    predict_logits,
)
from sslunet.utils.acceleration import cpu_has_native_bf16  # noqa: E402
from sslunet.utils.atomic import write_json  # noqa: E402
from sslunet.utils.device import resolve_device  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import machine  # noqa: E402

T_IMPORTS = time.perf_counter() - T_START
REPO = Path(__file__).resolve().parents[1]


class CountingPredictor:
    """A predictor that adds up the time spent inside the network calls."""

    def __init__(self, predictor, device: torch.device):
        self.predictor, self.device, self.seconds, self.calls = predictor, device, 0.0, 0

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.predictor(tiles)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def profile(model, cases, amp: bool, tta: bool, out_dir: Path) -> dict:
    """Median seconds per case of each stage."""
    config, plans = model.config, model.plans
    inference = inference_config(config, 0.5, tta, model.device)
    rows = []
    for case in cases:
        predictors = [CountingPredictor(network_predictor(n, model.device, amp), model.device)
                      for n in model.networks]
        t0 = time.perf_counter()
        _, data, props = read_case(case, plans, config)
        t1 = time.perf_counter()
        logits = predict_logits(predictors, data, config, plans.num_classes, inference,
                                model.device)
        t2 = time.perf_counter()
        export_logits(logits, props, plans, config, out_dir / f"{case.case_id}.nii.gz")
        t3 = time.perf_counter()
        network = sum(p.seconds for p in predictors)
        rows.append({"read_preprocess_s": t1 - t0, "network_s": network,
                     "blend_s": t2 - t1 - network, "export_s": t3 - t2, "total_s": t3 - t0,
                     "network_calls": sum(p.calls for p in predictors),
                     "shape": list(data.shape[1:])})
    keys = ("read_preprocess_s", "network_s", "blend_s", "export_s", "total_s")
    out = {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}
    out["per_case"] = rows
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", type=Path, required=True)
    p.add_argument("-i", "--input", type=Path, required=True)
    p.add_argument("-f", "--folds", nargs="+", default=None)
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    model_dir, files = checkpoint_files(args.model, args.folds, "final")
    model = load_model(model_dir, files, device)
    load_s = time.perf_counter() - t0
    cases = list_input_cases(args.input, model.plans.num_input_channels,
                             (".nii.gz", ".nii", ".mha", ".nrrd"))[: args.cases]
    precisions = [True, False] if cpu_has_native_bf16() or device.type == "cuda" else [False]
    result = {"machine": machine(), "device": str(device), "model": str(model_dir),
              "configuration": model.config.name, "cases": [c.case_id for c in cases],
              "start_up": {"imports_s": round(T_IMPORTS, 2), "load_model_s": round(load_s, 2)},
              "threads": torch.get_num_threads(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="profile-predict-") as tmp:
        for amp in precisions:
            for tta in (False, True):
                name = f"{'amp' if amp else 'fp32'}_{'tta' if tta else 'no_tta'}"
                print(f"{name} ...", file=sys.stderr)
                result["runs"][name] = profile(model, cases, amp, tta, Path(tmp))
    out = args.out or REPO / "benchmarks" / "results" / f"profile_predict_{device.type}.json"
    write_json(out, result)
    s = result["start_up"]
    print(f"\nstart-up: imports {s['imports_s']} s, model {s['load_model_s']} s; "
          f"{result['machine']['cpu']}, {torch.get_num_threads()} threads\n")
    print("| run | read + preprocess | network | blending | export | total |\n"
          "|---|---|---|---|---|---|")
    for name, r in result["runs"].items():
        print(f"| {name} | {r['read_preprocess_s']} | {r['network_s']} | {r['blend_s']} | "
              f"{r['export_s']} | {r['total_s']} |")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
