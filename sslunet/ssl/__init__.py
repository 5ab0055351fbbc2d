"""Self-supervised pretraining: objectives (``sslunet.ssl.losses``) and corruptions."""
