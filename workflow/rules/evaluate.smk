# FID/KID/precision/recall per samples file against the embedded real reference, the real-data floor, the report.
# With evaluate.reference_statistics set (an ADM reference batch: mu, sigma), scoring reads that file instead and
# the train-split reference is not made; the config check has already refused a missing or malformed file.
REFERENCE_DIR = "results/fid_reference"
REFERENCE_FILES = [f"{REFERENCE_DIR}/reference.json", f"{REFERENCE_DIR}/reference.npz"]
ADM_STATISTICS = STUDY.evaluate.reference_statistics
# What scoring reads: the ADM statistics file, or the train-split reference features and their info.
REFERENCE_INPUTS = [ADM_STATISTICS] if ADM_STATISTICS else REFERENCE_FILES
# … and the feature classifier, when the study's is not committed (classifier.smk).
REFERENCE_INPUTS = REFERENCE_INPUTS + CLASSIFIER_INPUTS
# Fixed text (no config value): the CLI reads the statistics file's path from the study file itself.
REFERENCE_ARGUMENT = "" if ADM_STATISTICS else f"--reference {REFERENCE_DIR}"


rule fid_reference:
    input:
        CLASSIFIER_INPUTS,
    output:
        REFERENCE_FILES,
    log:
        "logs/evaluate/fid_reference.log",
    conda:
        "../envs/ism.yaml"
    threads: JOBS.reference.cpus
    resources:
        gpu=JOBS.reference.gpus,
        mem_mb=JOBS.reference.mem_mb,
        runtime=JOBS.reference.runtime_min,
    params:
        ism=ISM,
        study=STUDY_FILE,
        evaluation=evaluation_key,
        out_dir=output_folder,
    shell:
        "{params.ism} fid-reference --config {params.study:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


# The real-data floor: held-out real images, scored as a samples file is (the same command as per-file scoring).
rule floor:
    input:
        reference=REFERENCE_INPUTS,
    output:
        "results/floor.json",
    log:
        "logs/evaluate/floor.log",
    conda:
        "../envs/ism.yaml"
    threads: JOBS.reference.cpus
    resources:
        gpu=JOBS.reference.gpus,
        mem_mb=JOBS.reference.mem_mb,
        runtime=JOBS.reference.runtime_min,
    params:
        ism=ISM,
        study=STUDY_FILE,
        evaluation=evaluation_key,
        reference=REFERENCE_ARGUMENT,
        source="--floor",
        images=STUDY.evaluate.floor_images or STUDY.sample.num_images,
    shell:
        "{params.ism} evaluate {params.source} --config {params.study:q} {params.reference} --out {output:q} > {log:q} 2>&1"


# Scoring (pipeline.job_grouping): per_file, one job per samples file; per_run, one `ism evaluate` process per run
# that reads the extractor and the reference once and writes each file's metrics, the same bytes as the per-file
# job's (one rule per file layout, evaluate_run or evaluate_run_w0.5_1, ...: common.smk, evaluate_jobs).
if GROUPING == "per_run":
    for _name, _runs in evaluate_jobs():

        rule:
            name:
                _name
            input:
                samples=run_files(_runs[0], "samples", "npz"),
                reference=REFERENCE_INPUTS,
            output:
                run_files(_runs[0], "metrics", "json"),
            log:
                "logs/evaluate/{run}/run.log",
            wildcard_constraints:
                run=only_runs(_runs),
            conda:
                "../envs/ism.yaml"
            threads: JOBS.evaluate.cpus
            resources:
                gpu=JOBS.evaluate.gpus,
                mem_mb=JOBS.evaluate.mem_mb,
                runtime=JOBS.evaluate.runtime_min,
            params:
                ism=ISM,
                study=STUDY_FILE,
                evaluation=evaluation_key,
                reference=REFERENCE_ARGUMENT,
            shell:
                "{params.ism} evaluate --samples {input.samples:q} --config {params.study:q} {params.reference} --out {output:q} > {log:q} 2>&1"

else:

    rule evaluate:
        input:
            samples=f"results/{{run}}/samples/{SAMPLE}.npz",
            reference=REFERENCE_INPUTS,
        output:
            f"results/{{run}}/metrics/{SAMPLE}.json",
        log:
            f"logs/evaluate/{{run}}/{SAMPLE}.log",
        conda:
            "../envs/ism.yaml"
        threads: JOBS.evaluate.cpus
        resources:
            gpu=JOBS.evaluate.gpus,
            mem_mb=JOBS.evaluate.mem_mb,
            runtime=JOBS.evaluate.runtime_min,
        params:
            ism=ISM,
            study=STUDY_FILE,
            evaluation=evaluation_key,
            reference=REFERENCE_ARGUMENT,
            source=samples_option,
        shell:
            "{params.ism} evaluate {params.source} --config {params.study:q} {params.reference} --out {output:q} > {log:q} 2>&1"


# What `snakemake --report` shows of the report rule's files (REPORT): category FID, a caption and labels each.
REPORT_ITEMS = {
    "results/fid_vs_steps.png": {
        "caption": "../report/fid_vs_steps.rst",
        "labels": {"result": "FID against NFE"},
    },
    "results/report.md": {
        "caption": "../report/fid_table.rst",
        "labels": {"result": "FID table (Markdown)"},
    },
    "results/fid_vs_steps.csv": {
        "caption": "../report/fid_csv.rst",
        "labels": {"result": "FID of every cell (CSV)"},
    },
}
REPORT_OUTPUTS = [
    (
        path
        if path not in REPORT_ITEMS
        else report(path, category="FID", **REPORT_ITEMS[path])
    )
    for path in REPORT
]


# The study's summary: the FID table and plot (`ism report`), then the training loss of every run from the logs its
# training left in models/<run>/train_log (`ism curves`).
rule report:
    input:
        metrics=METRICS,
        floor="results/floor.json",
    output:
        REPORT_OUTPUTS,
        curves=report(
            "results/train_loss.png",
            caption="../report/train_loss.rst",
            category="Training",
            labels={"result": "training loss"},
        ),
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
        study=STUDY_FILE,
        # Published FIDs printed next to the runs: a change rewrites the report, nothing else.
        paper=digest(STUDY.paper.model_dump(mode="json")),
    shell:
        "{params.ism} report --runs {params.runs:q} --config {params.study:q} --floor {input.floor:q} --metrics {input.metrics:q} --out-dir results > {log:q} 2>&1 && {params.ism} curves --runs {params.runs:q} --out {output.curves:q} >> {log:q} 2>&1 && cat results/report.md"
