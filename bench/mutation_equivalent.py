"""Mutants of the invariant modules that no test can tell from the original, each with the line the
mutation writes (mutmut's numbers shift when the code changes; bench/mutation.py then reports the
mutant as a survivor again, and its explanation as stale) and the reason.

Two kinds: behaviour-equivalent (same results for every input the code can receive), and wording of a
human-readable message (tests pin the facts a message carries: codes, names, numbers, fields; not
its letters, case or separators).
"""

WORDING = "message wording only: the tests pin the facts it carries (code, names, numbers, fields), not its letters"

NOFOLLOW = "O_NOFOLLOW exists on every platform aotc runs on (Linux): getattr's default is never used"

EP_DIST = "importlib.metadata's entry points always carry their distribution (ep.dist): the fallback for none never runs"

BARE_EP = "aotc wheels write their entry point as a bare package name (`kgood = kgood`, no `:attr`): every split gives it whole"

REG_STACK = "cuobjdump -res-usage prints REG, STACK, SHARED and LOCAL for every function: get's default is never used"

LOCAL_ZERO = "nvcc 13's ABI keeps local arrays in the stack frame: cuobjdump showed LOCAL:0 for every kernel compiled here, a 2048 B stack frame included, so no test can tell which key or default was read"
ZSTD_DEFAULT = "python-zstandard's own defaults (content size written, no checksum): None or no argument gives the same frame"

TMP_NAME = "the name of a private temporary folder or file the disassembler reads: any name does"

RECORD_MESSAGE = ("the path and kind go only into CacheFormatError's message, which _record drops: it "
                  "returns None for every unreadable record")
CUBINS_OBJECTS = ("manifest_problems refuses a manifest whose `cubins` holds anything but objects (AOTC-WHEEL-011) "
                  "before _check_kernel reads it: the branch for a non-object never runs")
NO_SCAN_ARGS = ("without a disassembler _SassScanner.cubin returns AOTC-WHEEL-013 before it reads its data or "
                "arch: any value passed for them gives the same diagnostic")

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
    # ---- aotc/build/spec.py --------------------------------------------------------------------------
    "aotc.build.spec.x_expand_table__mutmut_26": ("""fix='XXuse e.g. name = "moe_w4a4"XX', file=file, spec="?"))""", WORDING),
    "aotc.build.spec.x_expand_table__mutmut_27": ("""fix='USE E.G. NAME = "MOE_W4A4"', file=file, spec="?"))""",
                                                  WORDING + " (case)"),
    "aotc.build.spec.x_load_specs__mutmut_34": ('file=spec.file, spec=spec.name, fix="XXgive each [[kernel]] a unique nameXX"))',
                                                WORDING),
    "aotc.build.spec.x_load_specs__mutmut_35": ('file=spec.file, spec=spec.name, fix="GIVE EACH [[KERNEL]] A UNIQUE NAME"))',
                                                WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_63": ('f"characters; got {repr(doc)[:80]}", fix="XXshorten the doc to one plain lineXX",',
                                                  WORDING),
    "aotc.build.spec.x_expand_table__mutmut_64": ('f"characters; got {repr(doc)[:80]}", fix="SHORTEN THE DOC TO ONE PLAIN LINE",',
                                                  WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_73": (
        'family = get_family(family_name if isinstance(family_name, str) else "XXXX")',
        'a non-string family is looked up as "XXXX" instead of "": no family has either name, both are refused alike'),
    "aotc.build.spec.x_expand_table__mutmut_95": ("""fix=f"use one of: {'XX, XX'.join(FAMILY_MODULES)}", **where))""",
                                                  WORDING + " (separator)"),
    "aotc.build.spec.x_expand_table__mutmut_127": ('diags.append(Diagnostic("AOTC-SPEC-006", str(e), fix="XXfix the `archs` listXX", **where))',
                                                   WORDING),
    "aotc.build.spec.x_expand_table__mutmut_128": ('diags.append(Diagnostic("AOTC-SPEC-006", str(e), fix="FIX THE `ARCHS` LIST", **where))',
                                                   WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_150": (
        'diags.append(Diagnostic("AOTC-SPEC-007", "XXa sweep list is emptyXX", fix="give at least one value", **where))',
        WORDING),
    "aotc.build.spec.x_expand_table__mutmut_151": (
        'diags.append(Diagnostic("AOTC-SPEC-007", "A SWEEP LIST IS EMPTY", fix="give at least one value", **where))',
        WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_152": (
        'diags.append(Diagnostic("AOTC-SPEC-007", "a sweep list is empty", fix="XXgive at least one valueXX", **where))',
        WORDING),
    "aotc.build.spec.x_expand_table__mutmut_153": (
        'diags.append(Diagnostic("AOTC-SPEC-007", "a sweep list is empty", fix="GIVE AT LEAST ONE VALUE", **where))',
        WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_173": (
        'f"{MAX_SWEEP_PRODUCT:,} per [[kernel]] table", fix="XXsplit the sweep over several XX"', WORDING),
    "aotc.build.spec.x_expand_table__mutmut_174": (
        'f"{MAX_SWEEP_PRODUCT:,} per [[kernel]] table", fix="SPLIT THE SWEEP OVER SEVERAL "', WORDING + " (case)"),
    "aotc.build.spec.x_expand_table__mutmut_175": ('"XXtables or sweep fewer valuesXX", details={"product": product,', WORDING),
    "aotc.build.spec.x_expand_table__mutmut_176": ('"TABLES OR SWEEP FEWER VALUES", details={"product": product,',
                                                   WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_12": (
        "raw = f.read(MAX_SPEC_FILE_BYTES + 2)",
        "reads one byte more before the same `len(raw) > MAX_SPEC_FILE_BYTES` test: the same files pass and fail"),
    "aotc.build.spec.x_load_spec_file__mutmut_27": ('fix="XXcheck the path and its permissionsXX")])', WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_28": ('fix="CHECK THE PATH AND ITS PERMISSIONS")])', WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_44": ('file=file, fix="XXsplit it into several filesXX")])', WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_50": (
        'data = tomllib.loads(raw.decode("UTF-8"))', "codec names are case-insensitive: the same decoder"),
    "aotc.build.spec.x_load_spec_file__mutmut_65": ('f"offset {e.start}", file=file, fix="XXsave the file as UTF-8XX")])',
                                                    WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_67": ('f"offset {e.start}", file=file, fix="SAVE THE FILE AS UTF-8")])',
                                                    WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_10": (
        "raw = f.read(None)",
        ("reads the whole file before the same `len(raw) > MAX_SPEC_FILE_BYTES` test: the same files pass and fail; "
        "only the memory read differs, which no test can observe without exhausting it")),
    "aotc.build.spec.x_load_spec_file__mutmut_82": ('fix="XXfix the syntax at the line shownXX")])', WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_83": ('fix="FIX THE SYNTAX AT THE LINE SHOWN")])', WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_98": (
        'return LoadResult([], [Diagnostic("AOTC-SPEC-001", "XXnot valid TOML: arrays or tables nested too deeplyXX",',
        WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_99": (
        'return LoadResult([], [Diagnostic("AOTC-SPEC-001", "not valid toml: arrays or tables nested too deeply",',
        WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_100": (
        'return LoadResult([], [Diagnostic("AOTC-SPEC-001", "NOT VALID TOML: ARRAYS OR TABLES NESTED TOO DEEPLY",',
        WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_101": ('file=file, fix="XXa spec needs at most two levels of listsXX")])',
                                                     WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_102": ('file=file, fix="A SPEC NEEDS AT MOST TWO LEVELS OF LISTS")])',
                                                     WORDING + " (case)"),
    "aotc.build.spec.x_load_spec_file__mutmut_125": (
        'return LoadResult([], [Diagnostic("AOTC-SPEC-001", "XXexpected one or more [[kernel]] tablesXX", file=file,',
        WORDING),
    "aotc.build.spec.x_load_spec_file__mutmut_127": ('fix="XXstart each spec with a [[kernel]] lineXX")])', WORDING),
    # ---- aotc/cache/store.py -------------------------------------------------------------------------
    "aotc.cache.store.xǁCorruptBlobErrorǁ__init____mutmut_4": (
        'where = f"moved to {moved_to}" if moved_to else "XXleft in placeXX"', WORDING),
    "aotc.cache.store.xǁCorruptBlobErrorǁ__init____mutmut_17": (
        'fix="XXrun `aotc verify` to find every entry that uses it, then rebuild (`aotc build`)XX",', WORDING),
    "aotc.cache.store.xǁBlobStoreǁsweep_tmp__mutmut_1": (
        "def sweep_tmp(self, dry_run: bool = True) -> list[str]:",
        ("the base class's sweep returns [] whatever dry_run says (backends without temp files; LocalBlobStore "
        "overrides it)")),
    "aotc.cache.store.xǁLocalBlobStoreǁstat__mutmut_12": (
        "header = f.read(None)  # the longest zstd frame header",
        "reads the whole frame instead of its header: frame_content_size reads the header only, same result"),
    "aotc.cache.store.x__config_error__mutmut_10": (
        '"XX(e.g. mypkg.stores:RedisBlobStore), or unset it to use the local storeXX",', WORDING),
    "aotc.cache.store.x__config_error__mutmut_11": (
        '"(e.g. mypkg.stores:redisblobstore), or unset it to use the local store",', WORDING + " (case)"),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_12": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", None) | getattr(os, "O_NONBLOCK", 0))', NOFOLLOW),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_15": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", ) | getattr(os, "O_NONBLOCK", 0))', NOFOLLOW),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_18": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 1) | getattr(os, "O_NONBLOCK", 0))', NOFOLLOW),
    "aotc.cache.store.xǁLocalBlobStoreǁstat__mutmut_13": (
        "header = f.read(19)  # the longest zstd frame header",
        "one byte past the longest (18-byte) zstd frame header: frame_content_size reads the header only"),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_21": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", None))',
        "O_NONBLOCK exists on every platform aotc runs on (Linux): getattr's default is never used"),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_24": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", ))',
        "O_NONBLOCK exists on every platform aotc runs on (Linux): getattr's default is never used"),
    # ---- aotc/runtime/installed_wheels.py -----------------------------------------------------------
    "aotc.runtime.installed_wheels.x__record__mutmut_3": (
        'text = dist.read_text("RECORD") if (dist is not None) or True else None', EP_DIST),
    "aotc.runtime.installed_wheels.x_discover__mutmut_8": (
        'for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if (e.dist) and False else "", e.name)):',
        EP_DIST + "; without it the order is by entry-point name, which is the package's name (aotc wheel writes "
        "one entry point named after its package)"),
    "aotc.runtime.installed_wheels.x_discover__mutmut_9": (
        'for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if (e.dist) or True else "", e.name)):',
        EP_DIST),
    "aotc.runtime.installed_wheels.x_discover__mutmut_10": (
        'for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "XXXX", e.name)):',
        EP_DIST),
    "aotc.runtime.installed_wheels.x_discover__mutmut_3": (
        "for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=None):",
        ("EntryPoints sort by (name, value, group); aotc wheels name their one entry point after the package, so "
        "the order is the same as by distribution name")),
    "aotc.runtime.installed_wheels.x_discover__mutmut_5": (
        "for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), ):",
        ("EntryPoints sort by (name, value, group); aotc wheels name their one entry point after the package, so "
        "the order is the same as by distribution name")),
    "aotc.runtime.installed_wheels.x__record__mutmut_13": (
        "return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) > 2}",
        ("RECORD rows have three fields (path, hash, size); a shorter row drops a file from the map, and a file "
        "RECORD does not list is refused either way")),
    "aotc.runtime.installed_wheels.x__record__mutmut_14": (
        "return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 3}",
        ("RECORD rows have three fields (path, hash, size); a shorter row drops a file from the map, and a file "
        "RECORD does not list is refused either way")),
    "aotc.runtime.installed_wheels.x__refusal__mutmut_4": (
        'return "XXits distribution has no RECORD to check the files againstXX", {}', WORDING),
    "aotc.runtime.installed_wheels.x__refusal__mutmut_5": (
        'return "its distribution has no record to check the files against", {}', WORDING + " (case)"),
    "aotc.runtime.installed_wheels.x__refusal__mutmut_6": (
        'return "ITS DISTRIBUTION HAS NO RECORD TO CHECK THE FILES AGAINST", {}', WORDING + " (case)"),
    "aotc.runtime.installed_wheels.x_discover__mutmut_12": (
        "dist = ep.dist.name if (ep.dist) and False else ep.name",
        EP_DIST + "; and aotc wheels name their entry point after their distribution's package"),
    "aotc.runtime.installed_wheels.x_discover__mutmut_13": ("dist = ep.dist.name if (ep.dist) or True else ep.name", EP_DIST),
    "aotc.runtime.installed_wheels.x_discover__mutmut_16": ("pkg_dir = _package_dir(ep.value.split(None)[0])", BARE_EP),
    "aotc.runtime.installed_wheels.x_discover__mutmut_17": ('pkg_dir = _package_dir(ep.value.split("XX:XX")[0])', BARE_EP),
    "aotc.cache.store.xǁLocalBlobStoreǁsweep_tmp__mutmut_9": (
        'if not entry.is_file(follow_symlinks=None) or not entry.name.endswith(".tmp"):',
        "DirEntry.is_file reads follow_symlinks as a truth value: None is False"),
    # ---- aotc/build/verify.py ------------------------------------------------------------------------
    "aotc.build.verify.x_parse_res_usage__mutmut_2": (
        'current = ""', "no kernel yet: '' and None are both false where `current` is tested"),
    "aotc.build.verify.x_parse_res_usage__mutmut_14": (
        'current = ""', "kernel done: '' and None are both false where `current` is tested"),
    "aotc.build.verify.x__check_sass__mutmut_15": (
        'listed = "XX, XX".join(f"{op} x{n}" for op, n in sorted(report.banned_found.items()))',
        WORDING + " (separator; details['banned'] holds them)"),
    "aotc.build.verify.x__check_sass__mutmut_38": (
        'found = "XX, XX".join(f"{op} x{n}" for op, n in report.mma_counts.items()) or "no MMA at all"',
        WORDING + " (separator; details['mma'] holds them)"),
    "aotc.build.verify.x__check_sass__mutmut_39": (
        'found = ", ".join(f"{op} x{n}" for op, n in report.mma_counts.items()) or "XXno MMA at allXX"', WORDING),
    "aotc.build.verify.x__check_sass__mutmut_54": (
        '"XXthe template did not instantiate the intended MMA path for this arch; check its XX"', WORDING),
    # ---- aotc/build/wheel_check.py ------------------------------------------------------------------
    "aotc.build.wheel_check.x__read_blob__mutmut_17": (
        'return raw, "XXXX"',
        "_read_blob's reason is read only when it returns no bytes (its one caller tests `raw is None` first)"),
    "aotc.build.wheel_check.x__diag__mutmut_1": (
        'def _diag(number: int, message: str, fix: str = "XXdo not install this wheel; rebuild it from a verified cache XX"',
        WORDING),
    "aotc.build.wheel_check.x__diag__mutmut_2": (
        'def _diag(number: int, message: str, fix: str = "DO NOT INSTALL THIS WHEEL; REBUILD IT FROM A VERIFIED CACHE "',
        WORDING + " (case)"),
    "aotc.build.wheel_check.x__diag__mutmut_3": ('"XX(`aotc verify`, then `aotc wheel`)XX") -> Diagnostic:', WORDING),
    "aotc.build.wheel_check.x__diag__mutmut_4": ('"(`AOTC VERIFY`, THEN `AOTC WHEEL`)") -> Diagnostic:', WORDING + " (case)"),
    "aotc.build.wheel_check.x__record_digest__mutmut_8": (
        'return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"XX=XX").decode()',
        ("the base64 of a 32-byte digest ends in one `=` after a character that carries 4 bits and two zero "
         "bits (one of AEIMQUYcgkosw048), never an X: stripping X too strips the same")),
    "aotc.build.wheel_check.x__layout__mutmut_34": ('"XXpass a wheel made by `aotc wheel`XX"))', WORDING),
    "aotc.build.wheel_check.x__check_entries__mutmut_13": (
        'if name.startswith("XX/XX") or "\\\\" in name or ".." in parts or not parts or parts[0] not in (pkg, dist_info):',
        ("an absolute name's first part is its root `/` (or `//`), never the package or dist-info folder: "
         "the parts[0] test refuses it without startswith")),
    "aotc.build.wheel_check.x__check_record__mutmut_9": (
        'rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("UTF-8"))))',
        "Python's codec names are case-insensitive: UTF-8 is utf-8"),
    "aotc.build.wheel_check.x__check_record__mutmut_56": ('f"RECORD says {\'XX,XX\'.join(entry)[:60]})"))',
                                                        WORDING + " (the separator between RECORD's fields)"),
    "aotc.build.wheel_check.x_check_wheel__mutmut_11": (
        'raise AotcError(_diag(4, f"{path} is not a readable wheel: {e}", "XXpass a wheel made by `aotc wheel`XX")) \\',
        WORDING),
    "aotc.build.wheel_check.x_check_wheel__mutmut_25": (
        'f"e.g. {encrypted[0][:121]}", "download or rebuild the wheel"))',
        "the bound keeps a hostile member name from flooding the message; 121 characters bound it as well: " + WORDING),
    "aotc.build.wheel_check.x_check_wheel__mutmut_26": (
        'f"e.g. {encrypted[0][:120]}", "XXdownload or rebuild the wheelXX"))', WORDING),
    "aotc.build.wheel_check.x_check_wheel__mutmut_27": (
        'f"e.g. {encrypted[0][:120]}", "DOWNLOAD OR REBUILD THE WHEEL"))', WORDING + " (case)"),
    "aotc.build.wheel_check.x_check_wheel__mutmut_42": (
        'raise AotcError(_diag(4, f"{path} is a damaged zip: {e}", "XXdownload or rebuild the wheelXX")) from None',
        WORDING),
    "aotc.build.wheel_check.x_check_wheel__mutmut_43": (
        'raise AotcError(_diag(4, f"{path} is a damaged zip: {e}", "DOWNLOAD OR REBUILD THE WHEEL")) from None',
        WORDING + " (case)"),
    "aotc.build.wheel_check.x__record__mutmut_2": ("return parse_record(tree.read(name), None, what)", RECORD_MESSAGE),
    "aotc.build.wheel_check.x__record__mutmut_3": ("return parse_record(tree.read(name), Path(name), None)", RECORD_MESSAGE),
    "aotc.build.wheel_check.x__read_blob__mutmut_12": (
        'return raw, "XXXX"', "with the bytes read, the reason is never read (_check_kernel reads it only when raw is None)"),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_2": ('return "XXnot a JSON object, or its content differs from its checksumXX"', WORDING),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_3": ('return "not a json object, or its content differs from its checksum"', WORDING + " (case)"),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_4": ('return "NOT A JSON OBJECT, OR ITS CONTENT DIFFERS FROM ITS CHECKSUM"', WORDING + " (case)"),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_13": ('problems = manifest_problems(m, key) if is_digest(key) else ["XXits file name is no digestXX"]', WORDING),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_14": ('problems = manifest_problems(m, key) if is_digest(key) else ["ITS FILE NAME IS NO DIGEST"]',
               WORDING + " (case)"),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_30": ('problems = ["XX`blobs` holds no cubin or moduleXX"]', WORDING),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_31": ('problems = ["`BLOBS` HOLDS NO CUBIN OR MODULE"]', WORDING + " (case)"),
    "aotc.build.wheel_check.x__manifest_problem__mutmut_33": ('return "XX; XX".join(problems)', WORDING + " (the separator between problems)"),
    "aotc.build.wheel_check.x__check_tables__mutmut_12": ("table = _record(tree, name, None)", RECORD_MESSAGE),
    "aotc.build.wheel_check.x__check_tables__mutmut_16": ('table = _record(tree, name, "XXtune tableXX")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x__check_tables__mutmut_17": ('table = _record(tree, name, "TUNE TABLE")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x__check_tables__mutmut_21": ('problem = ("XXnot a JSON object, or its content differs from its checksumXX" if table is None', WORDING),
    "aotc.build.wheel_check.x__check_tables__mutmut_22": ('problem = ("not a json object, or its content differs from its checksum" if table is None',
               WORDING + " (case)"),
    "aotc.build.wheel_check.x__check_tables__mutmut_23": ('problem = ("NOT A JSON OBJECT, OR ITS CONTENT DIFFERS FROM ITS CHECKSUM" if table is None',
               WORDING + " (case)"),
    "aotc.build.wheel_check.x__check_tables__mutmut_38": ('problem = "XXit names kernels this wheel does not holdXX"', WORDING),
    "aotc.build.wheel_check.x__check_tables__mutmut_39": ('problem = "IT NAMES KERNELS THIS WHEEL DOES NOT HOLD"', WORDING + " (case)"),
    "aotc.build.wheel_check.x_check_tree__mutmut_35": ('"XXrebuild the wheel with this aotc versionXX"))', WORDING),
    "aotc.build.wheel_check.x_check_tree__mutmut_36": ('"REBUILD THE WHEEL WITH THIS AOTC VERSION"))', WORDING + " (case)"),
    "aotc.build.wheel_check.x_check_tree__mutmut_53": ("m = _record(tree, name, None)", RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_57": ('m = _record(tree, name, "XXmanifestXX")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_58": ('m = _record(tree, name, "MANIFEST")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_94": ("ref = _record(tree, name, None)", RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_98": ('ref = _record(tree, name, "XXrefXX")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_99": ('ref = _record(tree, name, "REF")', RECORD_MESSAGE),
    "aotc.build.wheel_check.x_check_tree__mutmut_124": ('"XXthis wheelXX"))', WORDING),
    "aotc.build.wheel_check.x_check_tree__mutmut_125": ('"THIS WHEEL"))', WORDING + " (case)"),
    "aotc.build.wheel_check.x__check_kernel__mutmut_97": ('t = str(c.get("target", "")) if (isinstance(c, dict)) or True else ""', CUBINS_OBJECTS),
    "aotc.build.wheel_check.x__check_kernel__mutmut_106": ('t = str(c.get("target", "")) if isinstance(c, dict) else "XXXX"', CUBINS_OBJECTS),
    "aotc.build.wheel_check.x__check_kernel__mutmut_128": ('targets.append((int(digits.rstrip("XXafXX")), digits[-1] if digits[-1] in "af" else ""))',
                ("differs from the code it ran on only for a target ending in X, which that code let through "
                 "to int() and a ValueError: the bug this mutant showed, fixed since (such targets are refused, "
                 "AOTC-WHEEL-011; test_the_cubin_targets_a_module_lists_are_read_or_refused)")),
    "aotc.build.wheel_check.x__check_kernel__mutmut_137": ('targets.append((int(digits.rstrip("af")), digits[-1] if digits[-1] in "XXafXX" else ""))',
                "a target ending in X never reaches the variant: int() of its digits raised first"),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_8": (
        'return [_diag(NO_SCAN, "XXno cuobjdump or nvdisasm found: the SASS scan cannot run, so the cubins are XX"',
        WORDING),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_9": (
        'return [_diag(NO_SCAN, "no cuobjdump or nvdisasm found: the sass scan cannot run, so the cubins are "',
        WORDING + " (case)"),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_11": (
        '"XXunprovenXX", "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])")]', WORDING),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_12": (
        '"UNPROVEN", "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])")]',
        WORDING + " (case)"),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_13": (
        '"unproven", "XXpip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])XX")]',
        WORDING + " (of the fix; the packages it names are pinned)"),
    "aotc.build.wheel_check.xǁ_SassScannerǁcubin__mutmut_27": (
        "report = verify_cubin(data, arch, None, self.toolchain, arch.smem_optin_bytes, 1)",
        ("ptxas caps static shared memory at 48 KiB and every arch's opt-in budget is at least 99 KiB, so one "
         "byte of dynamic shared memory never crosses it; the per-kernel resources that record it are not returned")),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_2": ("return self.cubin(None, arch)", NO_SCAN_ARGS),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_3": ("return self.cubin(b\"\", None)", NO_SCAN_ARGS),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_6": ('return self.cubin(b"XXXX", arch)', NO_SCAN_ARGS),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_7": ("with tempfile.TemporaryDirectory(prefix=None) as tmp:", TMP_NAME),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_8": ('with tempfile.TemporaryDirectory(prefix="XXaotc-wheel-check-XX") as tmp:', TMP_NAME),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_9": ('with tempfile.TemporaryDirectory(prefix="AOTC-WHEEL-CHECK-") as tmp:', TMP_NAME),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_13": ('path = Path(tmp) / "XXmodule.soXX"',
        TMP_NAME + " (cuobjdump's failure message names it too: a file gone once the message is read)"),
    "aotc.build.wheel_check.xǁ_SassScannerǁmodule__mutmut_14": ('path = Path(tmp) / "MODULE.SO"',
        TMP_NAME + " (cuobjdump's failure message names it too: a file gone once the message is read)"),
    "aotc.build.wheel_check.xǁInstalledTreeǁread__mutmut_2": (
        "raise KeyError(None) from None",
        "its one reader (_read_blob) catches the KeyError as 'missing' and never reads its argument"),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_27": (
        'fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 1))',
        "O_NONBLOCK exists on every platform aotc runs on (Linux): getattr's default is never used"),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_36": ('self._corrupt(digest, path, "XXa symbolic link (not followed)XX")',
                                                         WORDING),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_53": ('self._corrupt(digest, path, "XXnot a regular fileXX")', WORDING),
    "aotc.cache.store.xǁLocalBlobStoreǁget__mutmut_54": ('self._corrupt(digest, path, "NOT A REGULAR FILE")',
                                                         WORDING + " (case)"),
    "aotc.cache.store.x_blob_store_class__mutmut_23": (
        'module_name, sep, class_name = spec.rpartition(":")',
        "only a value with two colons splits differently, and no module or class name holds a colon: refused either way"),
    "aotc.cache.store.x_blob_store_class__mutmut_34": ('raise _config_error(spec, "XXnot of the form module:ClassXX")',
                                                       WORDING),
    "aotc.cache.store.x_blob_store_class__mutmut_35": ('raise _config_error(spec, "not of the form module:class")',
                                                       WORDING + " (case)"),
    "aotc.build.verify.x__check_sass__mutmut_55": (
        '"the template did not instantiate the intended mma path for this arch; check its "', WORDING + " (case)"),
    "aotc.build.verify.x__check_sass__mutmut_56": (
        '"THE TEMPLATE DID NOT INSTANTIATE THE INTENDED MMA PATH FOR THIS ARCH; CHECK ITS "', WORDING + " (case)"),
    "aotc.build.verify.x__check_sass__mutmut_57": (
        '"XXarch guards (e.g. CUTLASS_ARCH_MMA_SM120_SUPPORTED) and the -gencodeXX",', WORDING),
    "aotc.build.verify.x__check_sass__mutmut_58": (
        '"arch guards (e.g. cutlass_arch_mma_sm120_supported) and the -gencode",', WORDING + " (case)"),
    "aotc.build.verify.x__check_sass__mutmut_59": (
        '"ARCH GUARDS (E.G. CUTLASS_ARCH_MMA_SM120_SUPPORTED) AND THE -GENCODE",', WORDING + " (case)"),
    "aotc.build.verify.x__check_resources__mutmut_23": (
        '"registers": r.get("REG", None), "stack_bytes": r.get("STACK", 0),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_25": (
        '"registers": r.get("REG", ), "stack_bytes": r.get("STACK", 0),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_28": (
        '"registers": r.get("REG", 1), "stack_bytes": r.get("STACK", 0),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_32": (
        '"registers": r.get("REG", 0), "stack_bytes": r.get("STACK", None),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_34": ('"registers": r.get("REG", 0), "stack_bytes": r.get("STACK", ),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_37": (
        '"registers": r.get("REG", 0), "stack_bytes": r.get("STACK", 1),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_41": ('"local_bytes": r.get("LOCAL", None),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_43": ('"local_bytes": r.get("LOCAL", ),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_40": ('"local_bytes": r.get(None, 0),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_44": ('"local_bytes": r.get("XXLOCALXX", 0),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_45": ('"local_bytes": r.get("local", 0),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_46": ('"local_bytes": r.get("LOCAL", 1),', LOCAL_ZERO),
    "aotc.build.verify.x__check_resources__mutmut_50": ('"shared_section_bytes": r.get("SHARED", None),', REG_STACK),
    "aotc.build.verify.x__check_resources__mutmut_52": ('"shared_section_bytes": r.get("SHARED", ),', REG_STACK),
    "aotc.cache.store.x__compressed_chunks__mutmut_3": (
        "cctx = _zstd().ZstdCompressor(level=level, write_content_size=None, write_checksum=False)", ZSTD_DEFAULT),
    "aotc.cache.store.x__compressed_chunks__mutmut_6": (
        "cctx = _zstd().ZstdCompressor(level=level, write_checksum=False)", ZSTD_DEFAULT),
    "aotc.cache.store.x__compressed_chunks__mutmut_4": (
        "cctx = _zstd().ZstdCompressor(level=level, write_content_size=True, write_checksum=None)", ZSTD_DEFAULT),
    "aotc.cache.store.x__compressed_chunks__mutmut_7": (
        "cctx = _zstd().ZstdCompressor(level=level, write_content_size=True, )", ZSTD_DEFAULT),
    "aotc.cache.store.x_blob_store_class__mutmut_36": ('raise _config_error(spec, "NOT OF THE FORM MODULE:CLASS")',
                                                       WORDING + " (case)"),
    "aotc.build.verify.x__check_resources__mutmut_55": ('"shared_section_bytes": r.get("SHARED", 1),', REG_STACK),
    "aotc.cache.store.x__compressed_chunks__mutmut_14": (
        "chunker = cctx.chunker(size=len(data), )",
        "the chunk size only cuts the compressed output into pieces: joined, they are the same frame"),
    "aotc.build.verify.x__check_resources__mutmut_80": ('"XXchoose a smaller tile or fewer pipeline stagesXX",', WORDING),
    "aotc.build.verify.x__check_resources__mutmut_81": ('"CHOOSE A SMALLER TILE OR FEWER PIPELINE STAGES",',
                                                        WORDING + " (case)"),
    "aotc.build.verify.x__run_tool__mutmut_6": (
        "proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=None)",
        "check=None is false like check=False: the exit status is returned, not raised"),
    "aotc.build.verify.x__run_tool__mutmut_11": (
        "proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, )",
        "subprocess.run's check defaults to False"),
    "aotc.build.verify.x__disassemble__mutmut_1": (
        "with ThreadPoolExecutor(max_workers=None) as pool:", "two tasks: any pool size runs both, and both are awaited"),
    "aotc.build.verify.x__disassemble__mutmut_2": (
        "with ThreadPoolExecutor(max_workers=3) as pool:", "two tasks: any pool size runs both, and both are awaited"),
    "aotc.build.verify.x__disassemble__mutmut_20": (
        "if rc == 0 or rc2 == 0:",
        "cuobjdump -sass and -res-usage read the same file: the real tool succeeds or fails on both together"),
    "aotc.build.verify.x__disassemble__mutmut_33": (
        '6, f"cuobjdump could not read the cubin (exit {rc}/{rc2}): {(sass + res).strip()[:301]}",',
        "the cut only applies to tool output over 300 characters; cuobjdump's refusal is one short line"),
    "aotc.build.verify.x__disassemble__mutmut_48": (
        '6, f"nvdisasm could not read the cubin (exit {rc}): {sass.strip()[:301]}",',
        "the cut only applies to tool output over 300 characters; nvdisasm's refusal is one short line"),
    "aotc.build.verify.x__disassemble__mutmut_34": (
        '"XXcheck that the toolchain\'s cuobjdump supports this target (aotc doctor)XX",', WORDING),
    "aotc.build.verify.x__disassemble__mutmut_49": (
        '"XXcheck that the toolchain\'s nvdisasm supports this target (aotc doctor)XX",', WORDING),
    "aotc.build.verify.x__disassemble__mutmut_50": (
        '"CHECK THAT THE TOOLCHAIN\'S NVDISASM SUPPORTS THIS TARGET (AOTC DOCTOR)",', WORDING + " (case)"),
    "aotc.build.verify.x__disassemble__mutmut_58": (
        '5, "XXneither cuobjdump nor nvdisasm was found: the SASS scan (banned/expected opcodes) cannot runXX",', WORDING),
    "aotc.build.verify.x__disassemble__mutmut_59": (
        '5, "neither cuobjdump nor nvdisasm was found: the sass scan (banned/expected opcodes) cannot run",',
        WORDING + " (case)"),
    "aotc.build.verify.x__disassemble__mutmut_60": (
        '5, "NEITHER CUOBJDUMP NOR NVDISASM WAS FOUND: THE SASS SCAN (BANNED/EXPECTED OPCODES) CANNOT RUN",',
        WORDING + " (case)"),
    "aotc.build.verify.x__disassemble__mutmut_61": (
        '"XXpip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])XX",', WORDING),
    "aotc.build.verify.x_verify_cubin__mutmut_11": ("with tempfile.TemporaryDirectory(prefix=None) as tmp:", TMP_NAME),
    "aotc.build.verify.x_verify_cubin__mutmut_12": ('with tempfile.TemporaryDirectory(prefix="XXaotc-verify-XX") as tmp:',
                                                    TMP_NAME),
    "aotc.build.verify.x_verify_cubin__mutmut_13": ('with tempfile.TemporaryDirectory(prefix="AOTC-VERIFY-") as tmp:',
                                                    TMP_NAME),
    "aotc.build.verify.x_verify_cubin__mutmut_17": ('path = Path(tmp) / "XXkernel.cubinXX"', TMP_NAME),
    "aotc.build.verify.x_verify_cubin__mutmut_18": ('path = Path(tmp) / "KERNEL.CUBIN"', TMP_NAME),
    "aotc.build.verify.x_verify_cubin__mutmut_36": (
        '_check_sass(sass or "XXXX", arch, expected_mma, report)',
        "sass is text whenever _check_sass runs (None only with a tool diagnostic); even '' and 'XXXX' scan alike"),
    "aotc.runtime.installed_wheels.x__digest__mutmut_8": (
        'return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"XX=XX").decode()',
        ("a 32-byte digest's base64 text ends in a character carrying 2 bits and 4 zero bits (A E I M Q U Y c g k o s w "
        "0 4 8), never X: stripping X as well as = changes nothing")),
    "aotc.cache.store.x_atomic_write__mutmut_30": (
        "with contextlib.suppress(None):",
        "tmp.unlink(missing_ok=True) raises no OSError a test can cause after a failed write (the folder exists)"),
    "aotc.cache.store.x_atomic_write__mutmut_31": ("tmp.unlink(missing_ok=None)", "a missing temp file raises FileNotFoundError, an OSError the contextlib.suppress(OSError) around it swallows"),
    "aotc.cache.store.x_atomic_write__mutmut_32": ("tmp.unlink(missing_ok=False)", "a missing temp file raises FileNotFoundError, an OSError the contextlib.suppress(OSError) around it swallows"),
}
