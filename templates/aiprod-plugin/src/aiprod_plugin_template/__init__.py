"""Template AIPROD plugin: copy, rename, replace the model."""
