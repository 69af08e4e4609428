# Encode the train split (identity pixels or SD-VAE latents) in shards, merged into one memory-mappable file.


rule encode_shard:
    output:
        latents=temp("data/latents/{dataset}/shard-{shard}-of-{shards}.npy"),
        labels=temp("data/latents/{dataset}/shard-{shard}-of-{shards}.labels.npy"),
    log:
        "logs/encode/{dataset}/shard-{shard}-of-{shards}.log",
    conda:
        "../envs/ism.yaml"
    threads: JOBS.encode.cpus
    resources:
        gpu=JOBS.encode.gpus,
        mem_mb=JOBS.encode.mem_mb,
        runtime=JOBS.encode.runtime_min,
    params:
        ism=ISM,
        study=STUDY_FILE,
        out_dir=output_folder,
        shards=shard_count,
        data=data_key,
        shard=shard_number,
    shell:
        "{params.ism} encode --config {params.study:q} --out-dir {params.out_dir:q} --shard {params.shard} --num-shards {params.shards} > {log:q} 2>&1"


rule encode:
    input:
        latents=encode_shard_files("npy"),
        labels=encode_shard_files("labels.npy"),
    output:
        latents="data/latents/{dataset}/train.npy",
        labels="data/latents/{dataset}/labels.npy",
        meta="data/latents/{dataset}/meta.json",
    log:
        "logs/encode/{dataset}/merge.log",
    conda:
        "../envs/ism.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        ism=ISM,
        study=STUDY_FILE,
        out_dir=output_folder,
        shards=ENCODE_SHARDS,
        data=data_key,
    shell:
        "{params.ism} encode --merge --config {params.study:q} --out-dir {params.out_dir:q} --num-shards {params.shards} > {log:q} 2>&1"
