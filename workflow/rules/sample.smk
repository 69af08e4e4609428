# Sample every run at every budget (and guidance scale w of intrinsic-guidance runs): one job per samples file, or
# pipeline.sample_shards jobs per file (a contiguous block of seeded batches each) merged before evaluation.
# Both run one command: a whole file is shard 0 of 1.

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


if SAMPLE_SHARDS == 1:

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
