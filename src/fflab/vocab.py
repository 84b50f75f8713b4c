"""The names settings accept for each interchangeable part, in one torch-free place.

The config schema offers these as choices; the modules that implement the parts (layers, objectives,
supervision, spiking) map the same names to code, and a test keeps the two in step.
"""

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu")
INITS = ("kaiming", "xavier", "torch")
INPUT_NORMS = ("length", "rms")
CONV_INPUT_NORMS = ("length", "rms", "group", "none")
GOODNESS = ("sum_squares", "mean_squares", "mean_activity")
OBJECTIVES = ("standard", "inverted")
LOSSES = ("softplus", "symba", "competitive")
# Convolutional and locally connected layers
SCOPES = ("sample", "position", "channel")
POOLS = ("max", "avg")
PADDINGS = ("same", "valid")
# Recurrent networks
WIRINGS = ("sum", "metalayer")
SOURCE_INITS = ("kaiming", "xavier", "orthogonal", "identity", "zeros")
# What a recurrent network takes goodness of: each counted step's activity (then averaged over the window), or
# the activity averaged over the window, i.e. a firing rate for spiking layers (one step's spikes are binary).
SCORES = ("steps", "window_mean")
# Spiking neurons and the neo-Hebbian rule
ENCODERS = ("direct", "rate", "latency")
NEURON_RESETS = ("subtract", "zero")
SURROGATES = ("fast_sigmoid", "atan", "straight_through")
TRACES = ("count", "leaky", "hard_leaky", "average")
NEURONS = ("lif", "relu")
THIRD_FACTORS = ("sigmoid", "symmetric")
SYMMETRIC_RULES = ("gradient", "notebook")  # the symmetric factor's gains: the FF loss gradient's, or Hebbian_FFA's
POST_GATES = ("none", "surrogate")
HEBBIAN_INITS = ("he", "normal", "uniform")
PLASTICITY = ("presentation", "online")  # a Hebbian update after each presentation, or at its every late step
PRESENTATIONS = ("both", "either")  # each image shown with its label and a wrong one, or once with either
HEBBIAN_SCORES = ("mean", "last")  # goodness of each step's trace averaged, or of the last presentation step's
HEBBIAN_UPDATES = ("rule", "optimizer")  # W += lr dW, or -dW handed to train.optimizer as the gradient
# Supervision
LABEL_MODES = ("overlay", "concat", "channels", "pattern", "none")
NEGATIVE_MODES = ("random", "hard", "hardest", "hybrid", "none")
HARD_SCORE_SOURCES = ("first_layer", "prediction", "refreshed", "readout")
LABEL_CODES = ("onehot", "binary")  # label inputs of Hebbian networks, concatenated to the image
# Training
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("none", "linear", "cosine", "hinton")
SCHEDULES = ("simultaneous", "greedy")
UPDATES = ("window", "step")
PRECISIONS = ("float32", "bfloat16")
PRECISION_SETTINGS = ("auto", *PRECISIONS)  # train.precision: "auto" is settled into one of PRECISIONS
PREDICT_METHODS = ("goodness", "readout", "goodness+readout")
