"""The markdown page of a `benchmarks.kernel_resources` result: targets, per kernel and target, and the launch
configurations the launchers choose. It reads only the result (and `benchmarks.occupancy`'s targets), so the
sweep imports it and not the other way round."""

from __future__ import annotations

from collections import defaultdict

from benchmarks.occupancy import ACT_SIGN_MIN_OCCUPANCY, MAX_REGISTERS, OCCUPANCY_ARCH


def _span(values: list[float], fmt: str = "{}") -> str:
    low, high = min(values), max(values)
    return fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"


def _tile_text(constexprs: dict) -> str:
    return ", ".join(f"{name}={value}" for name, value in constexprs.items() if name.startswith(("BLOCK", "CHANNELS")))


def markdown(result: dict) -> str:
    rows, failures = result["rows"], result["target_misses"]
    compiled = [row for row in rows if row["compiled"]]
    lines = [
        f"# Kernel resources: triton {result['triton']}, {', '.join(result['archs'])}",
        "",
        f"Compiled without a GPU on {result['date']} by `{result['command']}` at commit {result['commit']}"
        f"{' (with uncommitted changes)' if result['uncommitted_changes'] else ''}; torch {result['torch']}, "
        f"triton {result['triton']}. {result['layers']} binary layers of {', '.join(result['inputs'])} at their recipes' "
        f"per-device batch and image size ({'; '.join(f'{m}: {b}×{s}²' for m, (b, s) in result['inputs'].items())}), "
        "fp32/bf16/fp16 storage (and fp32 weights with bf16/fp16 signs), NCHW and channels_last, with and without "
        f"shift/alpha, every surrogate: {result['specializations']} distinct specializations, {len(rows)} rows "
        f"({len(compiled)} compiled).",
        "",
        f"Registers, stack and local memory from `cuobjdump -res-usage` on Triton's cubin (`ptxas -v` on its PTX "
        f"agreed on {result['ptxas_cross_check']['agreed']} of {result['ptxas_cross_check']['checked']} "
        "specializations cross-checked); spill bytes = stack + local. Occupancy = "
        "resident warps ÷ the SM's maximum, from registers (per warp, in units of 256, in 4 sub-partitions), warps "
        "per block, shared memory (dynamic + static + the driver's 1 KB per block) and the blocks-per-SM limit "
        "(`ARCHS` in benchmarks/occupancy.py). Reads in flight = resident blocks × tile elements × bytes read "
        "per element (x and g, or w and g): a Little's-law estimate of what keeps HBM busy (H200: 4.8 TB/s × ~1 µs "
        "÷ 132 SMs ≈ 36 KB per SM). These are predictions; only a GPU measures the bandwidth they reach.",
        "",
        "## Targets",
        "",
    ]
    if failures:
        lines += [f"**{len(failures)} missed:**", ""] + [f"- {line}" for line in failures[:60]]
        if len(failures) > 60:
            lines.append(f"- … and {len(failures) - 60} more (in the JSON's `target_misses`)")
    else:
        lines.append(f"All met: every row compiled, 0 spill bytes on every target, every act_sign specialization ≥ "
                     f"{ACT_SIGN_MIN_OCCUPANCY:.0%} theoretical occupancy on sm_{OCCUPANCY_ARCH}, every weight_sign "
                     f"specialization below {MAX_REGISTERS} registers.")
    lines += ["", "## Per kernel and target", "",
              "| kernel | arch | specializations | compiled | num_warps | registers | spill bytes | shared bytes | "
              "occupancy | reads in flight per SM |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for row in rows:
        groups[(row["kernel"], row["arch"])].append(row)
    for (kernel, arch), group in sorted(groups.items(), key=lambda item: (item[0][0], int(item[0][1][3:]))):
        done = [row for row in group if row["compiled"]]
        if not done:
            lines.append(f"| {kernel} | {arch} | {len(group)} | 0 | | | | | | |")
            continue
        lines.append(
            f"| {kernel} | {arch} | {len(group)} | {len(done)} | {_span([r['num_warps'] for r in done])} | "
            f"{_span([r['registers'] for r in done])} | {_span([r['spill_bytes'] for r in done])} | "
            f"{_span([r['shared_bytes'] for r in done])} | {_span([r['occupancy'] for r in done], '{:.0%}')} | "
            f"{_span([r['read_bytes_in_flight_per_sm'] / 1024 for r in done], '{:.0f} KB')} |"
        )
    lines += ["", "## Launch configurations the launchers choose", "",
              f"Per kernel, each distinct tile and num_warps: one layer shape that gets it (its dtype, grid), and the "
              f"sm_{OCCUPANCY_ARCH} registers and occupancy over every specialization with that tile (dtypes, "
              "surrogates, with and without shift/alpha).", "",
              f"| kernel | tile | num_warps | example | grid | specializations | sm_{OCCUPANCY_ARCH} registers "
              f"| sm_{OCCUPANCY_ARCH} occupancy |",
              "|---|---|---|---|---|---|---|---|"]
    tiles_used = defaultdict(list)
    for row in rows:
        if row["arch"] == f"sm_{OCCUPANCY_ARCH}" and row["compiled"]:
            tiles_used[(row["kernel"], _tile_text(row["constexprs"]), row["num_warps"])].append(row)
    for (kernel, tile, warps), group in tiles_used.items():
        example = group[0]["example"]
        runtime = f" {example['runtime']}" if "runtime" in example else ""
        lines.append(
            f"| {kernel} | {tile} | {warps} | {'×'.join(map(str, example['shape']))} {example['layout']} "
            f"{example['dtype']} | {example['grid']}{runtime} | {len(group)} | "
            f"{_span([r['registers'] for r in group])} | {_span([r['occupancy'] for r in group], '{:.0%}')} |"
        )
    return "\n".join(lines) + "\n"
