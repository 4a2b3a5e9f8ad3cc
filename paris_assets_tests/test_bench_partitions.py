"""bench_partitions on 300 images in 3 partitions: its counts add up and the planted cross-partition copies are gone."""

from __future__ import annotations

import pandas as pd

from paris_assets.bench.partitions import final_kept_ids, main, recipe


def test_bench_partitions_tiny(tmp_path, capsys):
    result = main(["--sizes", "300", "--partition-size", "100", "--shard-rows", "100", "--bases", "textures",
                   "--synthetic", "20000", "--workdir", str(tmp_path)])
    printed = capsys.readouterr().out
    row, = result["rows"]
    fan_in = row["fan_in"]
    assert row["partitions"] == 3 and "| 300 | 3 |" in printed
    assert row["kept_after_partitions"] + row["dup_within"] + row["other_rejected"] == 300
    assert fan_in["rows"] == row["kept_after_partitions"]
    assert fan_in["kept"] + sum(fan_in["dropped"].values()) == fan_in["rows"]
    kept = final_kept_ids(row)
    assert len(kept) == fan_in["kept"]

    plan = recipe(0, 300)
    ids = result["samples"]["image_id"]
    partition = pd.Series(range(300)) // 100
    cross = plan.index[(plan["kind"] == "exact_copy") & (partition[plan["source"].clip(0)].to_numpy() != partition)]
    assert len(cross) > 0, "the recipe plants no exact copy across partitions at this size"
    assert not kept & set(ids[cross]), "a byte-exact copy of a row in another partition survived the fan-in"
    placeholders = plan.index[plan["kind"] == "placeholder"]
    assert partition[placeholders].nunique() > 1
    assert len(kept & set(ids[placeholders])) <= 3, "near-identical placeholder tiles survived (three designs)"
    reached = set(ids[cross]) & set(pd.concat([pd.read_parquet(f"{row['run']}/part-{p:05d}/filtered/kept.parquet")
                                                for p in range(3)])["image_id"])
    dropped_across = pd.read_parquet(f"{row['run']}/fan_in_dropped.parquet").set_index("image_id")
    assert reached, "no planted cross-partition copy reached the fan-in"
    assert (dropped_across.loc[sorted(reached), "reason"] == "duplicate_exact").all()

    baseline = result["baselines"][300]
    assert baseline["stats"]["input"] == 300 and baseline["stats"]["kept"] > 0
    synthetic = result["synthetic"]
    assert synthetic["rows"] == 20000
    assert synthetic["rows"] - synthetic["kept"] == synthetic["planted"]  # chance pairs within 6 bits: ~1e-11
