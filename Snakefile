# The ism study as a DAG: encode -> train (submitit) -> sample at every budget -> FID -> report.
# Rules are one-line `ism` CLI calls; what they compute lives in src/ism. Run: snakemake -c2 (or --profile …).
from snakemake.utils import min_version

min_version("9.19")


# The default study, unless a study file is given: `--configfile config/imagenet256.yaml` replaces it
# (it is not merged onto the digits study, so no key leaks from one study into the other).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/evaluate.smk"


# `snakemake --report results/report.html` (or .zip) after a run: this description, the outputs the rules flag with
# report() (their captions are in workflow/report/) and the study file below.
report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        REPORT,
        # The validated study every job read (written by common.smk; no rule makes it, so it is flagged here).
        report(
            STUDY_FILE,
            caption="workflow/report/study.rst",
            category="Study",
            labels={"result": "study file"},
        ),


# Coarse targets (one per DVC stage): the encoded data, every run's model, the report.
rule encoded:
    input:
        LATENT_FILES,


rule trained:
    input:
        MODELS,
