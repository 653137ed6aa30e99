"""The songs of @CORPUS@: the one piece of code this recipe needs (read by local/data.py).

Write find_songs() for the corpus; docs/new_dataset.md shows a complete example.
"""
SOURCES = ["vocals", "accompaniment"]  # source names: the order of the network's outputs and of the scores


def find_songs(corpus_dir):
    """The songs of each set: ``{set: {utt: {"mixture": spec, <source>: spec, ...}}}``.

    Args:
        corpus_dir: ``pathlib.Path`` of the corpus (``run.sh --corpus_dir``).
    Sets: ``train`` and ``valid`` (to train), ``test`` (to separate and score; may be left out).
    ``utt``: the song's name, unique in its set; local/data.py makes the id of it (whitespace -> ``_``,
    e.g. ``"My Song"`` -> ``My_Song``). ``spec``: the
    absolute path of an audio file (any format libsndfile reads, any rate or channel count), or a
    one-line JSON audio spec (docs/data.md): ``{"sum": [path, ...]}`` adds files,
    ``{"path": path, "channel": 1}`` takes one channel, ``{"path": path, "channel": "sum"}`` adds them.
    Every song has a spec for ``mixture`` and for each name of ``SOURCES``.
    """
    raise NotImplementedError(f"local/songs.py of @CORPUS@ is still the template's stub: write its find_songs() "
                              f"to read the corpus at {corpus_dir} (see docs/new_dataset.md)")
