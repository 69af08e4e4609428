# Training goes through submitit (D1): this rule runs on the submit host, submits one job (local, slurm or
# debug per launch.cluster), streams its log and waits; SLURM time limits and preemptions requeue and resume.
# --watch-pid $PPID: the shell's parent is Snakemake; if it is killed (even with -9) the launcher cancels the job.


localrules:
    train,


rule train:
    input:
        latents=LATENT_FILES,
    output:
        model="models/{run}/model.pt",
    log:
        "logs/train/{run}.log",
    conda:
        "../envs/ism.yaml"
    threads: train_threads
    resources:
        submitit_jobs=1,
    params:
        ism_bin=ISM_BIN,
        study=STUDY_FILE,
        latents=latents_folder,
        training=training_key,
        workdir=train_workdir,
    shell:
        "{params.ism_bin} launch --config {params.study:q} --run {wildcards.run} --latents {params.latents:q} --workdir {params.workdir:q} --output {output.model:q} --live-dir models/{wildcards.run}/train_log --watch-pid $PPID > {log:q} 2>&1"
