-- 0009: where the token budget cut a reply short. A reply decoded under a grammar always
-- completes within max_tokens; when the budget, not the model, decided its ending, `cut_at` is
-- the byte offset of the output from which it did (NULL: the model's own reply).
ALTER TABLE calls ADD COLUMN cut_at INTEGER;
