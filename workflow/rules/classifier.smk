# The feature classifier of FID (evaluate.extractor: classifier). Where it comes from (ism.config.classifier_source):
#   given      evaluate.classifier names a file the user made: used as it is, never rebuilt (an input, so replacing
#              it re-embeds the reference and rescores);
#   committed  the dataset's file under src/ism/assets (digits): part of the code, no job;
#   built      otherwise (an image folder, mnist5k without its file): models/classifier-<study>.pt, trained by the
#              `classifier` rule below, which exists only then. It reruns when the data or the classifier's settings
#              change (its params); the FID reference and scoring depend on it.
from ism.config import classifier_source

CLASSIFIER_SOURCE = classifier_source(STUDY)
# What the FID reference and every scoring job read besides the images (nothing for a committed classifier).
CLASSIFIER_INPUTS = (
    [str(CLASSIFIER_SOURCE[0])]
    if CLASSIFIER_SOURCE and CLASSIFIER_SOURCE[1] != "committed"
    else []
)
# What determines the built classifier: the data section (dataset, root, split, image size) and its training settings.
CLASSIFIER_KEY = digest(
    [data_key(), STUDY.evaluate.classifier_steps, STUDY.evaluate.classifier_seed]
)


if CLASSIFIER_SOURCE and CLASSIFIER_SOURCE[1] == "built":

    rule classifier:
        output:
            CLASSIFIER_INPUTS,
        log:
            "logs/evaluate/classifier.log",
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
            classifier=CLASSIFIER_KEY,
        shell:
            "{params.ism} classifier --config {params.study:q} --out {output:q} > {log:q} 2>&1"
