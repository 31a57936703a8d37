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
    "aotc.arch.x_parse_arch_list__mutmut_16": ('raise UnknownArchError("XXempty arch listXX")', WORDING),
    # ---- aotc/build/rules.py -------------------------------------------------------------------------
    "aotc.build.rules.x_check__mutmut_21": (
        """return Verdict(spec, arch, [Diagnostic(NOT_APPLICABLE, f"spec lists archs {'XX, XX'.join(spec.archs)}",""",
        WORDING + " (the separator between the listed archs)"),
    "aotc.build.rules.x_check__mutmut_39": (
        "model = family.smem(spec.params, None)",
        "no family's SMEM model reads the arch: SharedStorage has the same layout on every target"),
    "aotc.build.rules.x_feature_diagnostics__mutmut_14": (
        'banned = "XX, XX".join(sorted(required & SM12X_BANNED))', WORDING + " (separator)"),
    "aotc.build.rules.x_feature_diagnostics__mutmut_26": (
        '"XXtcgen05/TMEM/UMMA, no wgmma and clusters of 1x1x1 only)XX",', WORDING),
    "aotc.build.rules.x_feature_diagnostics__mutmut_28": (
        '"TCGEN05/TMEM/UMMA, NO WGMMA AND CLUSTERS OF 1X1X1 ONLY)",', WORDING + " (case)"),
    "aotc.build.rules.x_feature_diagnostics__mutmut_29": (
        'fix="XXuse an SM120 collective (mma.sync, block-scaled kinds) insteadXX", **where)]', WORDING),
    "aotc.build.rules.x_feature_diagnostics__mutmut_30": (
        'fix="use an sm120 collective (mma.sync, block-scaled kinds) instead", **where)]', WORDING + " (case)"),
    "aotc.build.rules.x_feature_diagnostics__mutmut_44": (
        """return [Diagnostic(NOT_APPLICABLE, f"{arch.name} lacks {'XX, XX'.join(sorted(missing))}",""",
        WORDING + " (separator; details['missing'] lists them)"),
    "aotc.build.rules.x_smem_diagnostic__mutmut_10": (
        'chosen = "XX, XX".join(f"{k}={v}" for k, v in model.chosen)',
        WORDING + " (separator; details['chosen'] holds them)"),
}
