"""The fixed sentences every embedding test compares against sentence-transformers, and the
comparison itself."""

from __future__ import annotations

import numpy as np

API_KEY = "test-openai-key"

SENTENCES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "How do I reset my password?",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "GPUs execute thousands of threads in parallel, grouped into warps of 32.",
    "Matrix multiplication dominates the cost of a transformer's forward pass.",
    "Dynamic batching trades a little latency for a lot of throughput.",
    "The weather today is sunny with a light breeze from the west.",
    "I can't believe it's not butter!",
    "She sells sea shells by the sea shore.",
    "To be, or not to be, that is the question.",
    "In 1969, Apollo 11 landed on the Moon and Neil Armstrong stepped out.",
    "Prices rose 3.5% in March, the fastest pace since 2022.",
    "Call me at 555-0142 after 6 p.m., or e-mail jane.doe@example.com.",
    "C'est la vie: l'été à Montréal est très agréable.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "東京は日本の首都です。",
    "Пример предложения на русском языке.",
    "Emoji are tokens too 🙂🚀🔥",
    "x",
    "OK",
    "why?",
    "   leading and trailing spaces   ",
    "Tabs\tand\nnewlines\nare whitespace as well.",
    "UPPER CASE AND lower case should embed the same for an uncased model.",
    "Hyphenated-words, under_scores and CamelCaseIdentifiers split into word pieces.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Interest rates affect mortgages, savings accounts and the value of bonds.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Please turn off the lights when you leave the room.",
    "The committee will publish its final report at the end of the quarter, after a "
    "review of the comments received during the consultation period.",
    "A long sentence keeps going, adding clause after clause, with commas and conjunctions, "
    "until it is long enough that padding in a batch with short sentences matters a lot for "
    "how much work the transformer does on each request it receives from the clients.",
    "Machine learning engineers deploy models onto accelerators and serve real-time "
    "predictions to applications that need answers in milliseconds.",
    "The library was closed on Sunday, so we read in the park instead.",
    "Open the pod bay doors, HAL.",
    "It was the best of times, it was the worst of times.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "Rust's borrow checker rejects programs with data races at compile time.",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "def add(a, b): return a + b",
    "The train to Boston leaves at 7:45 from platform 9.",
    "Neural networks are trained by gradient descent on a loss function.",
    "Please find attached the invoice for October.",
]
# Longer than the model's 256-token limit: sentence-transformers truncates it, and so does the
# V2 endpoint; the OpenAI endpoint refuses it.
LONG = " ".join(["The long input repeats this clause to pass the token limit."] * 30)


def assert_close(got: np.ndarray, want: np.ndarray, atol: float = 1e-4) -> None:
    """Per-element |got - want| <= atol; names the worst row and column when it fails."""
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert np.isfinite(got).all(), "non-finite values in the embeddings"
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert diff[worst] <= atol, f"max |diff| {diff[worst]:.2e} at {worst} (atol {atol})"
