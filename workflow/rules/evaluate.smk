# FID/KID/precision/recall per samples file against the cached real reference, the real-data floor, the report.


rule fid_reference:
    output:
        "results/fid_reference/reference.json",
    log:
        "logs/evaluate/fid_reference.log",
    conda:
        "../envs/ism.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        ism=ISM,
        study=STUDY_FILE,
        evaluation=evaluation_key,
    shell:
        "{params.ism} fid-reference --config {params.study:q} --out-dir results/fid_reference > {log:q} 2>&1"


rule floor:
    input:
        reference="results/fid_reference/reference.json",
    output:
        "results/floor.json",
    log:
        "logs/evaluate/floor.log",
    conda:
        "../envs/ism.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        ism=ISM,
        study=STUDY_FILE,
        evaluation=evaluation_key,
        images=STUDY.evaluate.floor_images or STUDY.sample.num_images,
    shell:
        "{params.ism} evaluate --floor --config {params.study:q} --reference results/fid_reference --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        samples="results/{run}/samples/{name}.npz",
        reference="results/fid_reference/reference.json",
    output:
        "results/{run}/metrics/{name}.json",
    log:
        "logs/evaluate/{run}/{name}.log",
    conda:
        "../envs/ism.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        ism=ISM,
        study=STUDY_FILE,
        evaluation=evaluation_key,
    shell:
        "{params.ism} evaluate --samples {input.samples:q} --config {params.study:q} --reference results/fid_reference --out {output:q} > {log:q} 2>&1"


rule report:
    input:
        metrics=METRICS,
        floor="results/floor.json",
    output:
        REPORT,
    log:
        "logs/report.log",
    conda:
        "../envs/ism.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ism=ISM,
        runs=RUNS,
    shell:
        "{params.ism} report --runs {params.runs:q} --floor {input.floor:q} --metrics {input.metrics:q} --out-dir results > {log:q} 2>&1 && cat results/report.md"
