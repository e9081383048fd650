"""A streaming model function: a character-level generator that yields one character per step.

At setup it learns which character most often follows each run of up to ORDER characters in a small text;
it then continues each prompt greedily from the longest run it knows. Every step yields the next character of every row in the batch; a row is done at a full stop
or after its `max_chars`, and its request ends there while the others go on (mfn.DONE).

    mfn package examples/char_stream/handler.py:CharStream --output models
    mfn deploy models --name demo
    mfn invoke char_stream --stream --protocol grpc -d '{"prompt": [["the mo"]], "max_chars": [[40]]}'
"""

from collections import Counter, defaultdict

import numpy as np

import mfn

ORDER = 4
TEXT = (
    "a model function is one handler class. mfn packages it for the server, deploys it, and serves it. "
    "the server batches the requests, the handler predicts, and the answers stream back as they are made. "
    "one yield sends one chunk to every request of the batch."
)


class CharStream(mfn.Handler):
    name = "char_stream"
    inputs = [mfn.Tensor("prompt", "BYTES", [1]), mfn.Tensor("max_chars", "INT32", [1])]
    outputs = [mfn.Tensor("char", "BYTES", [1]), mfn.Tensor("position", "INT32", [1])]
    batching = mfn.Batching(max_batch_size=16, max_queue_delay_us=2000)

    def setup(self, ctx):
        following = defaultdict(Counter)
        for end in range(1, len(TEXT)):
            for length in range(1, ORDER + 1):
                if end - length >= 0:
                    following[TEXT[end - length:end]][TEXT[end]] += 1
        self.next_char = {run: counts.most_common(1)[0][0] for run, counts in following.items()}

    def predict(self, inputs):
        texts = [prompt.decode() or " " for prompt in inputs["prompt"][:, 0]]
        limits = inputs["max_chars"][:, 0]
        finished = np.zeros(len(texts), dtype=bool)
        for position in range(1, int(limits.max(initial=0)) + 1):
            chars = [self._next(text) for text in texts]
            texts = [text + char for text, char in zip(texts, chars)]
            finished |= (np.array(chars) == ".") | (position >= limits)
            yield {
                "char": np.array([[char.encode()] for char in chars], dtype=object),
                "position": np.full((len(chars), 1), position, dtype=np.int32),
                mfn.DONE: finished.copy(),
            }

    def _next(self, text):
        for length in range(min(ORDER, len(text)), 0, -1):
            if text[-length:] in self.next_char:
                return self.next_char[text[-length:]]
        return " "
