"""The model card (README.md with Hub metadata) written beside a trained model."""

from pathlib import Path

from .labels import LABELS


def write_model_card(folder: str | Path, config: dict, metrics: dict) -> Path:
    """Write `folder/README.md` from the model's config.json and metrics.json contents."""
    training = config["training"]
    lineage = ""
    averaging = ""
    if training.get("weight_averaging"):
        avg = training["weight_averaging"]
        averaging = (
            f"- Stochastic weight averaging of the {avg['epochs']} epochs from epoch {avg['from_epoch']} on (BatchNorm "
            f"statistics recomputed): {avg['val_accuracy']:.4f} on validation against {avg['best_checkpoint_val_accuracy']:.4f} "
            f"for the best checkpoint, so the {'average' if avg['used'] else 'best checkpoint'} is this model.\n"
        )
    if training.get("init_from"):
        before = training.get("init_training") or {}
        lineage = (
            f"- Warm restart: started from the weights of `{training['init_from']}`"
            + (f" ({before.get('epochs_run')} epochs of {before.get('optimizer')}, lr {before.get('lr')}, "
               f"{before.get('schedule')}, {before.get('training_seconds', 0) / 60:.0f} minutes)" if before else "")
            + ("; `train.py` takes it from git as committed, so this recipe reruns from a clean clone.\n"
               if str(training["init_from"]).startswith("git:") else "; reproduce that model first, then this recipe.\n")
        )
    distilling = ""
    if training.get("distill_from"):
        share = training.get("distill_weight", 0.5)
        distilling = (
            f"- Distillation: each training target is {1 - share:.0%} the face's own label and {share:.0%} the "
            f"mean probabilities that {', '.join(f'`{t}`' for t in training['distill_from'])} give the face (each "
            "with its own test-time flip and blur).\n"
        )
    widths = f" (filters per stage {'-'.join(map(str, training['widths']))})" if training.get("widths") else ""
    mix = training.get("mix", "none")
    mixing = f" with {mix} (alpha {training.get('mix_alpha')})" if mix != "none" else ""
    results = "\n".join(
        f"| {r['set']} | {r['labels']} | {r['samples']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | "
        f"{r['macro_f1']:.3f} | {min(r['recall'].values()):.3f} ({min(r['recall'], key=r['recall'].get)}) |"
        for r in config.get("development_results", [])
    )
    if results:
        results = ("\n## Results on the development sets (the model as the app runs it)\n\n"
                   "| set | labels | faces | accuracy | balanced accuracy | macro F1 | lowest recall |\n"
                   "|---|---|---|---|---|---|---|\n" + results + "\n")
    framing = config.get("framing")
    preprocessing = (
        f"- Preprocessing (`emotion.preprocess`): a square crop {framing['scale']}x the detector's face box, centred "
        f"{framing['shift_up']} box heights above it, padded beyond the image border; grayscale, 48x48, "
        f"normalised per face ({config.get('normalization', 'none')}).\n" if framing else "")
    labels = training.get("labels", "fer2013")
    label_text = {"fer2013": "FER2013's own labels",
                  "ferplus": "the FER+ vote distributions over the 7 labels (contempt, unknown and not-a-face votes dropped)",
                  "mix": f"{1 - training.get('ferplus_weight', 0.5):.0%} FER2013 label, "
                         f"{training.get('ferplus_weight', 0.5):.0%} FER+ vote distribution"}[labels]
    capture = (" plus capture augmentation (brightness, contrast, gamma, low light, blur, noise, JPEG quality 20-90, "
               "16-24 px resolution)" if training.get("capture") else "")
    photos = training.get("select_photos")
    ferplus_used = labels != "fer2013" or any(r["labels"] == "FER+ majority" for r in config.get("development_results", []))
    sources = "\n".join(line for line in (
        f"- Faces: FER2013 (Goodfellow et al., 2013), `{training['data']}`; research use only, so the model inherits that "
        "restriction.",
        "- Labels: FER+ (Barsoum et al., 2016; github.com/microsoft/FERPlus, MIT licence), 10 annotators' votes per face"
        + (", in the training targets and" if labels != "fer2013" else ",") + " in the evaluation by FER+ majority."
        if ferplus_used else "",
        f"- `{photos}` (SFEW 2.0, Dhall et al.; research use only): movie-frame faces used to select the checkpoint, "
        "test-time augmentation and framing, never for training." if photos else "",
    ) if line)
    rows = "\n".join(
        f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for label, m in metrics["per_class"].items()
    )
    text = f"""---
library_name: keras
pipeline_tag: image-classification
license: other
license_name: research-only-data
tags:
- facial-expression-recognition
- emotion-recognition
- fer2013
- keras
metrics:
- accuracy
- f1
---

# Facial emotion classifier ({config['architecture']}, FER2013)

Classifies a 48x48 grayscale face crop into the 7 FER2013 emotions: {', '.join(LABELS)}.
It is the model behind the facial emotion Space; `emotion.EmotionRecognizer` finds faces, crops them and calls it.

## Validation metrics ({metrics['samples']} images, `{training['data']}`)

| metric | value |
|---|---|
| accuracy | {metrics['accuracy']:.4f} |
| accuracy without test-time flip or blur | {metrics.get('accuracy_without_tta', float('nan')):.4f} |
| macro F1 | {metrics['macro_f1']:.4f} |
| weighted F1 | {metrics['weighted_f1']:.4f} |
| cross-entropy loss | {metrics['loss']:.4f} |
| expected calibration error, raw | {metrics.get('ece_before_calibration', float('nan')):.4f} |
| ECE after temperature scaling (T fitted on one half, measured on the other) | {metrics.get('ece_after_calibration_heldout', float('nan')):.4f} |
| ECE after temperature {config['temperature']:.2f} (fitted on all of it, in-sample) | {metrics['ece']:.4f} |

| label | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

![confusion matrix](confusion_matrix.png)
![training curves](training_curves.png)

{results}
## Recipe

- Architecture `{config['architecture']}`{widths}, {config['parameters']:,} parameters, input {config['input_size']}.
{preprocessing}- Targets: {label_text}.
- Optimizer {training['optimizer']} (lr {training['lr']}, weight decay {training['weight_decay']}), schedule {training['schedule']},
  {training['epochs']} epochs (best epoch {training['best_epoch']}), batch {training['batch_size']},
  label smoothing {training['label_smoothing']}, class weighting {training['class_weighting']},
  augmentation {training['augment']}{mixing}{capture}, precision {training['precision']}, seed {training['seed']}.
- Test-time augmentation: {config['tta']}; input blur sigma {config.get('blur_sigma', 0.0)} (softens sharp faces
  toward the resampled ones training saw); both chosen on the validation split{' and the photos' if photos else ''}, the
  temperature {config['temperature']:.3f} on the validation split.
{averaging}{distilling}{lineage}- Trained in {training['training_seconds'] / 60:.0f} minutes on {training['hardware']}.
- Reproduce: `python train.py --data DIR --config recipe.json` with this folder's `recipe.json` (every setting).

## Data

`{training['data']}`: {training['train_images']:,} training and {training['val_images']:,} validation images
(a `train/` + `val/` layout, or one folder split {1 - training.get('val_fraction', 0.2):.0%}:{training.get('val_fraction', 0.2):.0%}
stratified). Checkpoints were selected on validation{' and the photos named below' if photos else ' only'}.

{sources}

## Intended use and limits

- Intended for demos, research and education: showing which expression a face displays in a photo or video.
- It reads facial *expressions*, not inner emotional states; expressions are culture- and context-dependent.
- FER2013 is web-scraped, mostly frontal, and skewed in age, ethnicity and lighting; accuracy drops on faces unlike it
  (profiles, occlusion, small or blurred faces, children). Disgust has few training examples.
- Do not use it for decisions about people (hiring, policing, health, education assessment).
"""
    path = Path(folder) / "README.md"
    path.write_text(text)
    return path
