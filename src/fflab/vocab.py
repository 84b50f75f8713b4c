"""The names settings accept for each interchangeable part, in one torch-free place.

The config schema offers these as choices; the modules that implement the parts (layers, objectives,
supervision, spiking) map the same names to code, and a test keeps the two in step.
"""

# relu_straight_through: ReLU forward, gradient 1 everywhere (loeweX/Forward-Forward's ReLU_full_grad)
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu", "relu_straight_through")
# he_normal: N(0, 2 / fan_in) whatever the activation; normal_fan_out: N(0, 1 / fan_out) (loeweX's)
INITS = ("kaiming", "xavier", "torch", "he_normal", "normal_fan_out")
INPUT_NORMS = ("length", "rms", "none")
# channel: each position's channels standardised (layer norm over C, no learned scale; ASGE's block LayerNorm)
CONV_INPUT_NORMS = ("length", "rms", "group", "channel", "none")
GOODNESS = ("sum_squares", "mean_squares", "mean_activity")
OBJECTIVES = ("standard", "inverted")
# unbounded: mean(G-) - mean(G+), goodness ascent and descent with no threshold (CheneyX2000's rule);
# squared_distance: mean((h+ - theta)^2) - mean((h- - theta)^2) over every unit (Nicola97's spiking metalayer)
LOSSES = ("softplus", "symba", "competitive", "unbounded", "squared_distance")
# Convolutional and locally connected layers
SCOPES = ("sample", "position", "channel")
# rms: the root of each window's mean square, which keeps a patch's mean-square energy (ASGE's RMS pooling)
POOLS = ("max", "avg", "rms")
PADDINGS = ("same", "valid")
# Recurrent networks
# populations (spiking): one LIF population per source, whose spikes are mixed (Nicola97's spiking metalayer)
WIRINGS = ("sum", "metalayer", "populations")
SOURCE_INITS = (
    "kaiming",
    "xavier",
    "orthogonal",
    "identity",
    "zeros",
    "torch",  # nn.Linear's default: U(+-1 / sqrt(fan_in))
    "he_uniform",  # nn.init.kaiming_uniform_ for ReLU: U(+-sqrt(6 / fan_in)), whatever the activation
    "he_normal",  # N(0, 2 / fan_in), whatever the activation
    "he_normal_x3",  # 3 x he_normal (and-rewsmith's "amplified" label weights)
    "uniform_0.05",  # U(-0.05, 0.05)
    "orthogonal_sqrt2",  # orthogonal with gain sqrt(2), whatever the activation
)
# torch: one bias per source, U(+-1 / sqrt(source width)), as nn.Linear makes it; none: no bias at all
BIAS_INITS = ("zeros", "torch", "none")
SOURCE_NORMS = ("rms", "length", "none")  # length: x / (|x| + 1e-4), as pezeshki's and Nicola97's layers
LABEL_PLACES = ("top", "input")  # recurrent: the label clamped above the top layer, or written into the input
PREDICT_ORDERS = ("synchronous", "in_turn")
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
# permuted_with_repeats: the labels of the batch in a random order, which gives about 1 in C images its own label
# as a "negative" (mpezeshki's and Nicola97's negatives, a bug of that code kept to reproduce it)
NEGATIVE_MODES = ("random", "hard", "hardest", "hybrid", "none", "permuted_with_repeats")
HARD_SCORE_SOURCES = ("first_layer", "prediction", "refreshed", "readout")
LABEL_CODES = ("onehot", "binary")  # label inputs of Hebbian networks, concatenated to the image
# Training
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
READOUT_OPTIMIZERS = ("adam", "sgd")
# cooldown_per_epoch: constant to the middle epoch, then 2 (1 + E - e) / E in epoch e (0-based; loeweX's)
LR_SCHEDULES = ("none", "linear", "cosine", "hinton", "cooldown_per_epoch")
LAYER_ORDERS = ("together", "in_turn")  # ff: every layer steps on one forward pass, or each before the next runs
SCHEDULES = ("simultaneous", "greedy")
UPDATES = ("window", "step")
PRECISIONS = ("float32", "bfloat16")
PRECISION_SETTINGS = ("auto", *PRECISIONS)  # train.precision: "auto" is settled into one of PRECISIONS
PREDICT_METHODS = ("goodness", "readout", "goodness+readout")
