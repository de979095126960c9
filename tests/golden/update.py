"""Regenerate the behaviour suite's expected results (``make golden-update``).

Trains every case, compares with the committed results and writes the new ones. When some case
computes something else, training's behaviour changed: the results are written for the next
training identity, and the suite fails until ``TRAINING_SEMANTICS`` in
``claimbench/train/semantics.py`` is raised to it (every user's runs then retrain, which is right:
they would compute other numbers). When nothing changed, nothing needs raising.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from claimbench.train.semantics import TRAINING_SEMANTICS
from tests.golden.cases import CASES, differences, fabricate_data, run_case

EXPECTED = Path(__file__).with_name("expected.json")


def load_expected() -> dict:
    return json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {"semantics": None, "cases": {}}


def main() -> int:
    old = load_expected()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fabricate_data(root / "data")
        (root / "ckpt").mkdir()
        for name, case in CASES.items():
            results[name] = run_case(name, root / "data", root / "ckpt")
            print(f"{name}: trained", flush=True)
    changed = sorted(name for name, case in CASES.items() if name not in old["cases"]
                     or differences(old["cases"][name], results[name], case.rtol, case.atol))
    removed = sorted(set(old["cases"]) - set(CASES))
    behaviour_changed = [n for n in changed if n in old["cases"]]
    semantics = TRAINING_SEMANTICS
    if behaviour_changed and old["semantics"] == TRAINING_SEMANTICS:
        semantics = TRAINING_SEMANTICS + 1
    # A case that computes what it did within the tolerance keeps its committed record: the file's
    # diff then shows only what changed (the last digits of a float64 sum move between machines).
    records = {name: old["cases"][name] if name in old["cases"] and name not in changed else results[name]
               for name in results}
    EXPECTED.write_text(json.dumps({"semantics": semantics, "cases": records}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED}: {len(results)} cases; new: {sorted(set(changed) - set(behaviour_changed))}; "
          f"removed: {removed}")
    if semantics != TRAINING_SEMANTICS:
        print(f"training computes other numbers in {len(behaviour_changed)} cases ({', '.join(behaviour_changed)}): "
              f"raise TRAINING_SEMANTICS in claimbench/train/semantics.py from {TRAINING_SEMANTICS} to {semantics} "
              "(every cached run then trains again)", file=sys.stderr)
        return 1
    print(f"training identity unchanged (TRAINING_SEMANTICS = {TRAINING_SEMANTICS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
