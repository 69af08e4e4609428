# Sample every run at every budget (and guidance scale w of intrinsic-guidance runs). pipeline.job_grouping:
#   per_file  one job per samples file, or pipeline.sample_shards jobs per file (a contiguous block of seeded batches
#             each) merged before evaluation. Both run one command: a whole file is shard 0 of 1.
#   per_run   one job per run writes all of its files: one `ism sample --steps 1 2 … 128` process; a run with
#             intrinsic guidance has one job per scale w (`--guidance w`), so that its files, twice or more those of
#             a run without w, do not make one job that runs alone at the end of the study. Batches are seeded per
#             (seed, batch), so each file is the per-file job's. One rule per file layout (sample_run,
#             sample_run_w0.5, ...; common.smk, sample_jobs) serves every run with that layout.

# The preview grid of each samples file is a result of `snakemake --report`: one subcategory per run, labelled by
# budget (and guidance scale w). Labels sort as text, so the budget is right-aligned with spaces (which HTML does
# not show): 1, 2, 4, ..., 128 then sort as numbers.
BUDGET_WIDTH = len(str(max(max(cfg.sample.budgets) for cfg in RUN_CONFIGS.values())))


SAMPLE_GRID = report(
    f"results/{{run}}/samples/{SAMPLE}.png",
    caption="../report/samples.rst",
    category="Samples",
    subcategory="{run}",
    labels=lambda wildcards: {"steps": wildcards.steps.rjust(BUDGET_WIDTH)}
    | ({"guidance w": wildcards.w} if wildcards.w else {}),
)


rule sample_shard:
    input:
        model="models/{run}/model.pt",
    output:
        temp(f"work/{{run}}/sample-shards/{SAMPLE}.shard-{{shard}}-of-{{shards}}.npz"),
    log:
        f"logs/sample/{{run}}/{SAMPLE}.shard-{{shard}}-of-{{shards}}.log",
    conda:
        "../envs/ism.yaml"
    threads: JOBS.sample.cpus
    resources:
        gpu=JOBS.sample.gpus,
        mem_mb=JOBS.sample.mem_mb,
        runtime=JOBS.sample.runtime_min,
    params:
        ism=ISM,
        study=STUDY_FILE,
        sampling=sampling_key,
        guidance=guidance_option,
        shard=shard_number,
        shards=shard_count,
        out_dir=output_folder,
    shell:
        "{params.ism} sample --checkpoint {input.model:q} --config {params.study:q} --run {wildcards.run} --steps {wildcards.steps} {params.guidance} --shard {params.shard} --num-shards {params.shards} --out-dir {params.out_dir:q} > {log:q} 2>&1"


if GROUPING == "per_run":
    # pipeline.sample_shards is 1 here (the config check refuses shards with per_run).
    for _name, _runs, _scales, _log in sample_jobs():

        rule:
            name:
                _name
            input:
                model="models/{run}/model.pt",
            output:
                samples=run_files(_runs[0], "samples", "npz", _scales),
                grids=[
                    report(
                        path,
                        caption="../report/samples_per_run.rst",
                        category="Samples",
                        subcategory="{run}",
                        labels=sample_labels(Path(path).stem),
                    )
                    for path in run_files(_runs[0], "samples", "png", _scales)
                ],
            log:
                _log,
            wildcard_constraints:
                run=only_runs(_runs),
            conda:
                "../envs/ism.yaml"
            threads: JOBS.sample.cpus
            resources:
                gpu=JOBS.sample.gpus,
                mem_mb=JOBS.sample.mem_mb,
                runtime=JOBS.sample.runtime_min,
            params:
                ism=ISM,
                study=STUDY_FILE,
                sampling=sampling_key,
                steps=run_budgets,
                guidance=run_guidance,
                out_dir=output_folder,
            shell:
                "{params.ism} sample --checkpoint {input.model:q} --config {params.study:q} --run {wildcards.run} --steps {params.steps} {params.guidance} --out-dir {params.out_dir:q} > {log:q} 2>&1"

elif SAMPLE_SHARDS == 1:

    use rule sample_shard as sample with:
        output:
            samples=f"results/{{run}}/samples/{SAMPLE}.npz",
            grid=SAMPLE_GRID,
        log:
            f"logs/sample/{{run}}/{SAMPLE}.log",
        params:
            shard=0,
            shards=1,

else:

    rule merge_samples:
        input:
            sample_shard_files(),
        output:
            samples=f"results/{{run}}/samples/{SAMPLE}.npz",
            grid=SAMPLE_GRID,
        log:
            f"logs/sample/{{run}}/{SAMPLE}.merge.log",
        conda:
            "../envs/ism.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            ism=ISM,
        shell:
            "{params.ism} merge-samples {input:q} --out {output.samples:q} > {log:q} 2>&1"
