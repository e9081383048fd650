"""A numpy-only model function over text, written as a plain function."""

import numpy as np

import mfn


@mfn.function(
    name="text_stats",
    inputs=[mfn.Tensor("text", "BYTES", [1])],
    outputs=[
        mfn.Tensor("n_chars", "INT64", [1]),
        mfn.Tensor("n_words", "INT64", [1]),
        mfn.Tensor("upper", "BYTES", [1]),
    ],
    batching=mfn.Batching(max_batch_size=16, max_queue_delay_us=1000),
)
def text_stats(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    texts = [value.decode("utf-8") for value in inputs["text"][:, 0]]
    return {
        "n_chars": np.array([[len(text)] for text in texts], dtype=np.int64),
        "n_words": np.array([[len(text.split())] for text in texts], dtype=np.int64),
        "upper": np.array([[text.upper().encode("utf-8")] for text in texts], dtype=object),
    }
