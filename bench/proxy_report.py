"""Turns bench/proxy.sh's JSON lines into the markdown tables of docs/benchmarks.md."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
lat = [r for r in rows if "p50" in r]
direct = {(r["rate"], r["http"]): r for r in lat if r["target"] == "direct"}
print("| HTTP | rate | target | p50 | p90 | p99 | p99.9 | added p50 | added p90 | added p99 | added p99.9 | errors | CPU-s / 1k req | RSS MB (anon + file) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in lat:
    d = direct[(r["rate"], r["http"])]
    added = [r[k] - d[k] for k in ("p50", "p90", "p99", "p99.9")]
    cpu = "" if r["cpu_s_per_1k"] is None or r["target"] == "direct" else f"{r['cpu_s_per_1k']:.4f}"
    rss = "" if r["target"] == "direct" else f"{r['rss_mb']:.1f} ({r.get('rss_anon_mb', 0):.1f} + {r.get('rss_file_mb', 0):.1f})"
    print(f"| {r['http']} | {r['rate']} | {r['target']} | " + " | ".join(f"{r[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9"))
          + " | " + " | ".join(f"{a:+.3f}" for a in added) + f" | {r['errors']} | {cpu} | {rss} |")
print()
print("| HTTP | round | target | max rps (one worker, 64 connections) | proxy CPU (cores) | rps per proxy CPU-second | peak RSS MB |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if "max_rps" in r:
        cores = r.get("cores")
        use = "" if cores is None else f"{cores:.2f}"
        per = "" if not cores else f"{r['max_rps'] / cores:.0f}"
        print(f"| {r.get('http', 1)} | {r.get('round', 1)} | {r['target']} | {r['max_rps']:.0f} | {use} | {per} | {r['rss_peak_mb']:.1f} |")

# Each round's ratio to HAProxy's in the same round (taken one after the other), then the median
# and the range over the rounds: the machine's drift falls on both sides of each ratio.
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2

maxes = [r for r in rows if "max_rps" in r]
for http in sorted({r.get("http", 1) for r in maxes}):
    by = {(r["target"], r.get("round", 1)): r for r in maxes if r.get("http", 1) == http}
    rounds = sorted({k[1] for k in by})
    lines = []
    for target in ("capstan", "nginx"):
        rate, per = [], []
        for n in rounds:
            a, h = by.get((target, n)), by.get(("haproxy", n))
            if not a or not h:
                continue
            rate.append(a["max_rps"] / h["max_rps"])
            if a.get("cores") and h.get("cores"):
                per.append((a["max_rps"] / a["cores"]) / (h["max_rps"] / h["cores"]))
        if rate:
            lines.append(f"- HTTP {'/1.1' if http == 1 else '/2 (h2c)'}, {target} / haproxy over {len(rate)} rounds: "
                         f"max rps median {median(rate):.2f}x ({min(rate):.2f}-{max(rate):.2f}), "
                         f"rps per proxy CPU-second median {median(per):.2f}x ({min(per):.2f}-{max(per):.2f})")
    if lines:
        print()
        print("\n".join(lines))

together = [r for r in rows if "together" in r]
if together:
    print()
    print("| HTTP | round (both at once, one CPU) | target | rps | proxy CPU (cores) | rps per proxy CPU-second |")
    print("|---|---|---|---|---|---|")
    for r in together:
        print(f"| {r['http']} | {r['together']} | {r['target']} | {r['rps']:.0f} | {r['cores']:.2f} | {r['rps'] / r['cores']:.0f} |")
    for http in sorted({r["http"] for r in together}):
        by = {(r["target"], r["together"]): r for r in together if r["http"] == http}
        ratios = []
        for n in sorted({k[1] for k in by}):
            a, h = by.get(("capstan", n)), by.get(("haproxy", n))
            if a and h and a["cores"] and h["cores"]:
                ratios.append((a["rps"] / a["cores"]) / (h["rps"] / h["cores"]))
        if ratios:
            print(f"- HTTP {'/1.1' if http == 1 else '/2 (h2c)'}, both at once, capstan / haproxy in requests per proxy "
                  f"CPU-second over {len(ratios)} rounds: median {median(ratios):.2f}x "
                  f"({', '.join(f'{x:.2f}' for x in ratios)})")
