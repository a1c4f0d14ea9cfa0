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
print("| round | target | max rps (one worker, 64 connections) | proxy CPU (cores) | rps per proxy CPU-second | peak RSS MB |")
print("|---|---|---|---|---|---|")
for r in rows:
    if "max_rps" in r:
        cores = r.get("cores")
        use = "" if cores is None else f"{cores:.2f}"
        per = "" if not cores else f"{r['max_rps'] / cores:.0f}"
        print(f"| {r.get('round', 1)} | {r['target']} | {r['max_rps']:.0f} | {use} | {per} | {r['rss_peak_mb']:.1f} |")
