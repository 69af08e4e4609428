# Sample every run at every budget (and guidance scale w of intrinsic-guidance runs): one file per job, or
# pipeline.sample_shards jobs per file (a contiguous block of seeded batches each) merged before evaluation.

if SAMPLE_SHARDS == 1:

    rule sample:
        input:
            model="models/{run}/model.pt",
        output:
            samples="results/{run}/samples/{name}.npz",
            grid="results/{run}/samples/{name}.png",
        log:
            "logs/sample/{run}/{name}.log",
        conda:
            "../envs/ism.yaml"
        threads: THREADS
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            ism=ISM,
            study=STUDY_FILE,
            sampling=sampling_key,
            arguments=sample_arguments,
        shell:
            "{params.ism} sample --checkpoint {input.model:q} --config {params.study:q} --run {wildcards.run} {params.arguments} --out-dir results/{wildcards.run}/samples > {log:q} 2>&1"

else:

    rule sample_shard:
        input:
            model="models/{run}/model.pt",
        output:
            temp("work/{run}/sample-shards/{name}.shard-{shard}-of-{shards}.npz"),
        log:
            "logs/sample/{run}/{name}.shard-{shard}-of-{shards}.log",
        conda:
            "../envs/ism.yaml"
        threads: THREADS
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            ism=ISM,
            study=STUDY_FILE,
            shards=SAMPLE_SHARDS,
            sampling=sampling_key,
            arguments=sample_arguments,
            shard=lambda wildcards: int(wildcards.shard),
            out_dir=output_folder,
        shell:
            "{params.ism} sample --checkpoint {input.model:q} --config {params.study:q} --run {wildcards.run} {params.arguments} --shard {params.shard} --num-shards {params.shards} --out-dir {params.out_dir:q} > {log:q} 2>&1"

    rule merge_samples:
        input:
            expand(
                "work/{{run}}/sample-shards/{{name}}.shard-{shard:05d}-of-{n:05d}.npz",
                shard=range(SAMPLE_SHARDS),
                n=SAMPLE_SHARDS,
            ),
        output:
            samples="results/{run}/samples/{name}.npz",
            grid="results/{run}/samples/{name}.png",
        log:
            "logs/sample/{run}/{name}.merge.log",
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
