"""Mutants of the invariant modules that no test can tell from the original, each with the line the
mutation writes (mutmut's numbers shift when the code changes; bench/mutation.py then reports the
mutant as a survivor again, and its explanation as stale) and the reason.

Two kinds: behaviour-equivalent (same results for every input the code can receive), and wording of a
human-readable message (tests pin the facts a message carries: codes, names, numbers, fields; not
its letters, case or separators).
"""

WORDING = "message wording only: the tests pin the facts it carries (code, names, numbers, fields), not its letters"

EQUIVALENT: dict[str, tuple[str, str]] = {
    # ---- aotc/arch.py -------------------------------------------------------------------------------
    "aotc.arch.x_target_preference__mutmut_9": (
        'rank = {"a": 0, "f": 1, "": 3}', "ranks are only compared with each other: 0 < 1 < 3 orders as 0 < 1 < 2"),
    "aotc.arch.x_target_preference__mutmut_7": (
        'rank = {"a": 0, "f": 2, "": 2}',
        "ties `f` with plain targets, but no device runs both: the only `f` target is sm120f, plain ones are SM8x"),
}
