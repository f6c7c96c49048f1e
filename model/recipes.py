"""The training recipes by name, as plain data (no NumPy), so that the command line can list
them without importing the trainer. model.train.make_config turns one into a TrainConfig."""

OPTIMIZER_NAMES = ("sgd", "momentum", "adam")  # model.network.OPTIMIZERS, by name

RECIPES = {
    # The original: 10 epochs, lr 0.1, batch 64, plain mini-batch gradient descent, z-score.
    # The original's order: the same pass over the data every epoch (no reshuffling).
    "faithful": dict(epochs=10, lr=0.1, batch_size=64, optimizer="sgd", schedule="constant", shuffle=False),
    # Momentum with a short warm-up and cosine decay, every image elastically distorted afresh
    # each epoch (Simard et al. 2003's field, milder: alpha 20, sigma 4): the same network,
    # about 0.990 on the validation split in about 30 s on 60,000 images (docs/benchmarks.md, "what each
    # ingredient adds").
    "default": dict(epochs=30, lr=0.05, batch_size=64, optimizer="momentum", momentum=0.9,
                    schedule="cosine", warmup_epochs=0.5, elastic_alpha=20.0, elastic_sigma=4.0),
    # The previous default: the same optimizer without augmentation, 15 epochs (0.983, 4 s).
    "plain": dict(epochs=15, lr=0.05, batch_size=64, optimizer="momentum", momentum=0.9,
                  schedule="cosine", warmup_epochs=0.5),
}
