"""Attribution prior: penalise input-gradient energy outside the lungs while training.

"Right for the right reasons" (Ross, Hughes & Doshi-Velez 2017, IJCAI) adds to the loss the input
gradients of the log-probabilities where an annotation says they should not matter; GradMask
(Simpson et al. 2019, arXiv:1904.07478) applies it to chest X-rays with lung masks. Here the term is

    lambda * mean over the batch of  sum_{outside lungs} g^2 / sum_{all pixels} g^2,
    g = d log p(true class | x) / dx,

the share of the squared input-gradient energy that falls outside the lung field (0 when the mask
covers the image or no gradient leaves the lungs, at most 1). Being a share, it does not reward
shrinking the gradients everywhere, and ``train.attribution_prior`` (lambda) is on the scale of the
cross-entropy. It needs a second, nested ``tf.GradientTape`` per step (the gradient of the
gradient): :class:`PriorTrainer` wraps the classifier for ``fit`` only, so what is saved
(``model.keras``, checkpoints) is the plain inner model, loadable without custom objects.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def outside_share(model, images, y, lungs, training: bool = False):
    """Per-image share of input-gradient energy of ``log p(true class)`` outside ``lungs``.

    Args:
        model: Classifier on ``(B, S, S, 1)`` raw 0-255 images, softmax output.
        images: ``(B, S, S, 1)`` float32.
        y: ``(B, K)`` one-hot (or smoothed) labels; the true class is their argmax.
        lungs: ``(B, S, S)`` float, 1 inside the lung field.
        training: Model call mode.

    Returns:
        ``((B,) shares, probabilities)``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        probs = model(images, training=training)
        true = tf.one_hot(tf.argmax(y, axis=-1), tf.shape(probs)[-1], dtype=probs.dtype)
        logp = tf.math.log(tf.reduce_sum(probs * true, axis=-1) + 1e-7)
    g = tape.gradient(logp, images)
    energy = tf.square(tf.cast(g[..., 0], tf.float32))
    outside = 1.0 - tf.cast(lungs, tf.float32)
    share = tf.math.divide_no_nan(tf.reduce_sum(energy * outside, axis=[1, 2]), tf.reduce_sum(energy, axis=[1, 2]))
    return share, probs


class PriorTrainer(keras.Model):
    """Training wrapper: cross-entropy + ``lam`` x :func:`outside_share`; inputs ``{"image", "lungs"}``.

    Only ``fit`` sees it: ``inner_model`` is what is checkpointed and saved.
    """

    def __init__(self, inner, lam: float, **kwargs):
        super().__init__(**kwargs)
        self.inner_model = inner
        self.lam = float(lam)
        self.prior_tracker = keras.metrics.Mean(name="prior")

    def call(self, inputs, training=False):
        x = inputs["image"] if isinstance(inputs, dict) else inputs
        return self.inner_model(x, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            share, probs = outside_share(self.inner_model, x["image"], y, x["lungs"], training=True)
            prior = tf.reduce_mean(share)
            loss = self.compute_loss(x=x, y=y, y_pred=probs, sample_weight=sample_weight) + self.lam * prior
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.prior_tracker.update_state(prior)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric is not self.prior_tracker:
                metric.update_state(y, probs, sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        logs = super().test_step(data)  # validation has no masks: no prior to report
        return {k: v for k, v in logs.items() if k != "prior"}

    @property
    def metrics(self):
        return [*super().metrics, self.prior_tracker]
