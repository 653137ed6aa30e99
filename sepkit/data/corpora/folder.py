"""Any multitrack collection laid out as one folder per song -> data dirs ``train``, ``valid``, ``test``.

Layout ``<split folder>/<song>/<files>``. A *description* (keyword arguments, or a YAML file with
the keys of :data:`DEFAULTS`) says where the songs are and which files make what::

    mixture: mixture.wav      # file name or glob in each song folder; "sum" = there is no mixture
                              # file, the mixture is the sum of the sources
    sources:                  # source name -> files (names or globs) summed into it; this order is
      vocals: [vocals.wav]    # the data dir's ``sources`` order
      accompaniment: [bass.wav, drums.wav, other.wav]

Patterns are relative to the song folder (``*``, ``?``, ``[...]``, ``**``, sub-folders;
``{song}`` stands for the folder's name). A plain name must exist; a glob must match at least
one file that is not taken yet. Files are taken in this order: the mixture, the plain names, then
the globs of each source in the order of ``sources``, so ``accompaniment: ["*.wav"]`` with
``vocals: [vocals.wav]`` takes every other wav. A plain name given twice, or a mixture pattern
matching several files, is a problem of that song.

Splits: the songs of ``train_dir`` (default ``corpus_dir``) train; ``valid_dir`` / ``test_dir``
(relative to ``corpus_dir``) hold the other sets, else ``valid_fraction`` / ``test_fraction`` of
the training songs are held out (by song, seeded, at least one song when the fraction is above
0). With only ``test_dir`` (no corpus) a test set alone is made, to evaluate a trained model.

Every song is checked before anything is written. Problems (one line each, naming the file):
missing, ambiguous or unreadable files, empty audio, channel counts that cannot be summed, files
that differ in length when ``length_policy`` is ``error`` (``trim`` / ``pad`` cut or zero-pad
them to the shortest / longest). ``bad_songs="fatal"`` stops on any problem, after listing all of
them; ``"skip"`` leaves those songs out. A set left without songs is an error.

Songs whose files share one sample rate and length are pointed to as they are (no audio is
copied). Other songs are *conformed*: every part is resampled to the mixture's rate (no mixture
file: the highest rate), mono files of a multichannel sum are copied to each channel, all parts
are cut or padded to one length, and the results are written as float32 wavs to
``OUTDIR/<prefix>wav/<split>/<utt>/{mixture,<source>}.wav``. Every data dir written thus passes
``utils/validate_data_dir.sh --check-audio``.
"""
import glob
import logging
import shutil
from pathlib import Path

import numpy as np

from sepkit.data.corpora import CorpusError, audio_info, check_targets, spec_json, unique_utt_ids, write_sets

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "describe", "parse_sources", "song_folders", "hold_out", "plan", "resolve_song", "check_song",
           "check_songs", "prepare"]

DEFAULTS = {
    "corpus_dir": None,        # root of the corpus: the training songs, unless train_dir is given
    "train_dir": None,         # folder of the training songs (relative to corpus_dir); none = corpus_dir
    "valid_dir": None,         # folder of the validation songs; none = valid_fraction of the training songs
    "test_dir": None,          # folder of the test songs; none = test_fraction of the training songs
    "valid_fraction": 0.1,     # share of the training songs held out for validation (without valid_dir)
    "test_fraction": 0.1,      # share of the training songs held out for testing (without test_dir)
    "seed": 0,                 # seed of the held-out choice
    "songs": "*",              # glob: the sub-folders of a split folder that are songs
    "mixture": "mixture.wav",  # file (name or glob) of the mixture, or "sum" (of the sources)
    "sources": {"vocals": ["vocals.wav"], "accompaniment": ["bass.wav", "drums.wav", "other.wav"]},
    "exclude": [],             # globs of files never used
    "bad_songs": "fatal",      # a song with a problem: fatal (stop, listing all), skip (leave it out)
    "length_policy": "error",  # files of a song differ in length: error, trim (to shortest), pad (to longest)
    "prefix": "",              # data dir names <prefix>train, <prefix>valid, <prefix>test
}
SPLITS = ("train", "valid", "test")
_RESERVED = {"wav", "utt2dur", "sources", "mix", "mixture"}  # data-dir and feature-dump file names


def parse_sources(text):
    """Command-line form ``"vocals=vocals.wav accompaniment=bass.wav,drums.wav"`` -> ``{name: [patterns]}``."""
    out = {}
    for item in text.split():
        name, sep, files = item.partition("=")
        if not sep or not name or not files.strip(","):
            raise CorpusError(f"sources: expected NAME=FILE[,FILE...] items separated by spaces, got {item!r}")
        if name in out:
            raise CorpusError(f"sources: source {name!r} is given twice")
        out[name] = [f for f in files.split(",") if f]
    if not out:
        raise CorpusError("sources: no source given")
    return out


def _pattern(value, where):
    if not isinstance(value, str) or not value.strip() or Path(value).is_absolute():
        raise CorpusError(f"{where}: {value!r} is not a file name or glob relative to the song folder")
    return value.strip()


def describe(config=None, **overrides):
    """The description: :data:`DEFAULTS`, then ``config`` (YAML file or dict), then ``overrides``.

    ``None`` and ``""`` mean "not given". Unknown keys and bad values raise :class:`CorpusError`
    naming the key. Returns every key of :data:`DEFAULTS` plus ``_given`` (keys set explicitly).
    """
    given = {}
    if config is not None and not isinstance(config, dict):
        import yaml

        try:
            with open(config, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as exc:
            raise CorpusError(f"{config}: cannot read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise CorpusError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise CorpusError(f"{config}: expected a mapping of description keys")
        config = loaded or {}
    for source in (config or {}, overrides):
        given.update({k: v for k, v in source.items() if v is not None and v != ""})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise CorpusError(f"unknown description key(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    d = {**DEFAULTS, **given, "_given": set(given)}
    for key, kind in (("valid_fraction", float), ("test_fraction", float), ("seed", int)):
        try:
            d[key] = kind(d[key])
        except (TypeError, ValueError):
            raise CorpusError(f"{key}: expected {'a number' if kind is float else 'an integer'}, "
                              f"got {d[key]!r}") from None
        if kind is float and not 0 <= d[key] < 1:
            raise CorpusError(f"{key}: must be in [0, 1), got {d[key]}")
    for key, choices in (("bad_songs", ("fatal", "skip")), ("length_policy", ("error", "trim", "pad"))):
        if d[key] not in choices:
            raise CorpusError(f"{key}: must be one of {', '.join(choices)}, got {d[key]!r}")
    sources = parse_sources(d["sources"]) if isinstance(d["sources"], str) else d["sources"]
    if not isinstance(sources, dict) or not sources:
        raise CorpusError(f"sources: expected a mapping of source name -> list of files, got {sources!r}")
    d["sources"] = {}
    for name, files in sources.items():
        if not isinstance(name, str) or not name or "/" in name or any(c.isspace() for c in name) \
                or name in _RESERVED:
            raise CorpusError(f"sources: {name!r} cannot be a source name (no spaces or '/'; not one of "
                              f"{', '.join(sorted(_RESERVED))})")
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not files:
            raise CorpusError(f"sources: {name}: expected a non-empty list of files")
        d["sources"][name] = [_pattern(f, f"sources: {name}") for f in files]
    d["mixture"] = "sum" if d["mixture"] == "sum" else _pattern(d["mixture"], "mixture")
    d["exclude"] = [d["exclude"]] if isinstance(d["exclude"], str) else list(d["exclude"] or [])
    d["prefix"] = str(d["prefix"] or "")
    return d


# ------------------------------------------------------------------------------------------- songs

def _match(song_dir, pattern, skip=frozenset()):
    """Files of ``song_dir`` matching ``pattern`` (``{song}`` = the folder name), sorted, minus ``skip``."""
    pattern = pattern.replace("{song}", glob.escape(song_dir.name))
    return sorted(p for p in song_dir.glob(pattern) if p.is_file() and p not in skip)


def resolve_song(song_dir, d):
    """Files of one song: ``(parts, infos, problems)``.

    ``parts`` = ``{"mixture": [path] or None (sum), <source>: [path, ...]}``; ``infos`` =
    ``{path: soundfile info}``; ``problems`` = short strings naming the file at fault.
    """
    problems, infos, owner = [], {}, {}
    skip = {p for pattern in d["exclude"] for p in _match(song_dir, pattern)}
    parts = {"mixture": None}
    if d["mixture"] != "sum":
        found = _match(song_dir, d["mixture"], skip)
        if len(found) == 1:
            parts["mixture"], owner[found[0]] = found, "mixture"
        else:
            listed = f" ({', '.join(p.name for p in found)})" if found else ""
            problems.append(f"{len(found) or 'no'} mixture files matching {d['mixture']!r}{listed}")
    exact = {p for pats in d["sources"].values() for pat in pats if not glob.has_magic(pat)
             for p in _match(song_dir, pat)}
    for name, patterns in d["sources"].items():
        parts[name] = []
        for pattern in patterns:
            literal = not glob.has_magic(pattern)
            found = _match(song_dir, pattern, frozenset() if literal else skip | exact | set(owner))
            if not found:
                problems.append(f"source {name}: {pattern} missing" if literal else
                                f"source {name}: no file matches {pattern!r}")
            for path in found:
                if owner.setdefault(path, name) != name:
                    problems.append(f"{path.name} is both {owner[path]} and {name}")
                elif path not in parts[name]:
                    parts[name].append(path)
    if not problems:
        for path in owner:
            try:
                infos[path] = audio_info(path)
            except CorpusError as exc:
                problems.append(str(exc).replace(f"{song_dir}/", ""))
    return parts, infos, problems


def check_song(parts, infos, d):
    """``(conform, rate, problems)``: must the song be rewritten, at which rate, or why it cannot be.

    The data-dir contract wants one sample rate and one length for the mixture and its sources,
    and a sum of files needs one channel count.
    """
    files = [p for key in parts for p in parts[key] or []]
    rates = [infos[p].samplerate for p in files]
    rate = infos[parts["mixture"][0]].samplerate if parts["mixture"] else max(rates)
    conform = len(set(rates)) > 1
    sums = [parts[k] for k in d["sources"] if len(parts[k]) > 1] + ([] if parts["mixture"] else [files])
    for group in sums:
        chans = {infos[p].channels for p in group}
        if len(chans - {1}) > 1:
            detail = ", ".join(f"{p.name} {infos[p].channels} ch" for p in group)
            return False, rate, [f"cannot sum files of different channel counts ({detail})"]
        conform |= len(chans) > 1
    seconds = [infos[p].frames / infos[p].samplerate for p in files]
    if max(seconds) - min(seconds) > 0.5 / rate:
        if d["length_policy"] == "error":
            detail = ", ".join(f"{p.name} {infos[p].frames} samples at {infos[p].samplerate} Hz" for p in files)
            return False, rate, [f"files differ in length ({detail}); length_policy trim or pad takes them"]
        conform = True
    return conform, rate, []


def _sum_spec(paths):
    items = [str(p.resolve()) for p in paths]
    return items[0] if len(items) == 1 else spec_json(sum=items)


def _conform(song, sources, outdir):
    """Write the song conformed to one rate and length; ``(mixture spec, {source: spec}, seconds)``."""
    from sepkit.audio import AudioError, read_audio, resample, write_audio

    parts, rate = song["parts"], song["rate"]
    try:
        loaded = {p: resample(read_audio(p)[0], song["infos"][p].samplerate, rate)
                  for key in parts for p in parts[key] or []}
    except AudioError as exc:
        raise CorpusError(str(exc)) from None
    lengths = [w.shape[1] for w in loaded.values()]
    n = max(lengths) if song["length_policy"] == "pad" else min(lengths)

    def total(waves):  # (C_i, N_i) arrays -> (max C, n) float64 sum; mono parts go to every channel
        channels = max(w.shape[0] for w in waves)
        out = np.zeros((channels, n))
        for w in waves:
            out[:, :min(n, w.shape[1])] += w[:, :n]
        return out

    out = {name: total([loaded[p] for p in parts[name]]) for name in sources}
    out["mixture"] = total([loaded[parts["mixture"][0]]] if parts["mixture"] else list(out.values()))
    specs = {}
    for key, wav in out.items():
        path = Path(outdir) / song["utt"] / f"{key}.wav"
        write_audio(path, wav.astype(np.float32), rate, subtype="FLOAT")
        specs[key] = str(path.resolve())
    return specs.pop("mixture"), specs, n / rate


def _song_specs(song, sources, wavdir):
    """``(mixture spec, {source: spec}, seconds)`` of a checked song, conformed if it must be."""
    if song["conform"]:
        return _conform(song, sources, wavdir)
    parts = song["parts"]
    mix = _sum_spec(parts["mixture"] or [p for name in sources for p in parts[name]])
    info = song["infos"][(parts["mixture"] or parts[sources[0]])[0]]
    return mix, {name: _sum_spec(parts[name]) for name in sources}, info.frames / info.samplerate


# ------------------------------------------------------------------------------------------ splits

def _scan(folder, d, skip=()):
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a directory")
    skip = {Path(p).resolve() for p in skip}
    songs = sorted(p for p in folder.glob(d["songs"]) if p.is_dir() and not p.name.startswith(".")
                   and p.resolve() not in skip)
    if not songs:
        raise CorpusError(f"{folder}: no song folders (sub-folders matching {d['songs']!r})")
    return songs


def _held_out(songs, fraction, seed, what, where):
    if fraction == 0:
        return []
    count = max(1, int(round(fraction * len(songs))))
    if count >= len(songs):
        raise CorpusError(f"{where}: cannot hold out {count} of {len(songs)} songs for the {what} set and "
                          "keep one for training")
    rng = np.random.default_rng(seed)
    return sorted(songs[i] for i in rng.choice(len(songs), size=count, replace=False))


def song_folders(d):
    """``{"train": pool, "valid": [...], "test": [...]}``: the song folders of each split folder.

    ``train`` is the pool the held-out sets come from; ``valid`` / ``test`` are present only when
    their folder is given. No audio is read.
    """
    root = Path(d["corpus_dir"]) if d["corpus_dir"] else None
    dirs = {}
    for split in SPLITS:
        path = Path(d[f"{split}_dir"]) if d[f"{split}_dir"] else None
        dirs[split] = root / path if path is not None and root is not None and not path.is_absolute() else path
    dirs["train"] = dirs["train"] or root
    if not any(dirs.values()):
        raise CorpusError("no songs: give corpus_dir (or train_dir, valid_dir, test_dir)")
    out = {}
    for split in ("valid", "test"):
        if dirs[split] is not None:
            if f"{split}_fraction" in d["_given"] and d[f"{split}_fraction"] > 0:
                raise CorpusError(f"give {split}_dir or {split}_fraction, not both")
            out[split] = _scan(dirs[split], d)
    if dirs["train"] is not None:
        out["train"] = _scan(dirs["train"], d, skip=[p for s, p in dirs.items() if s != "train" and p is not None])
    return out


def hold_out(folders, d):
    """Final ``{split: [song folder]}``: ``valid`` / ``test`` without a folder are held out of ``train``."""
    out = dict(folders)
    if "train" in out:
        pool = list(out["train"])
        where = pool[0].parent if pool else "the training songs"
        for split, seed in (("test", d["seed"]), ("valid", d["seed"] + 1)):
            if split not in folders:
                out[split] = _held_out(pool, d[f"{split}_fraction"], seed, split, where)
                pool = [p for p in pool if p not in out[split]]
        out["train"] = pool
    return {s: out[s] for s in SPLITS if out.get(s)}


def plan(d):
    """``{split: [song folder, ...]}`` of a description (:func:`describe`), before any song is checked."""
    return hold_out(song_folders(d), d)


def check_songs(folders, d):
    """Resolve and check every song of ``{group: [folder]}``: ``{group: [song record]}``.

    A song with a problem stops everything (``bad_songs="fatal"``, after logging all of them) or
    is left out (``"skip"``); a group left without songs is an error.
    """
    from tqdm import tqdm

    out, bad = {}, []
    for group, songs in folders.items():
        ids, out[group] = unique_utt_ids([p.name for p in songs], f"the {group} songs"), []
        for song_dir in tqdm(songs, desc=f"checking {group} songs", disable=len(songs) < 50, leave=False):
            parts, infos, problems = resolve_song(song_dir, d)
            conform, rate, problems = check_song(parts, infos, d) if not problems else (False, 0, problems)
            if problems:
                bad.append(f"{song_dir}: {'; '.join(problems)}")
                (logger.warning if d["bad_songs"] == "skip" else logger.error)("%s", bad[-1])
                continue
            out[group].append(dict(dir=song_dir, utt=ids[song_dir.name], parts=parts, infos=infos, conform=conform,
                                   rate=rate, length_policy=d["length_policy"]))
    if bad and d["bad_songs"] == "fatal":
        more = f" (and {len(bad) - 1} more songs with problems, listed above)" if len(bad) > 1 else ""
        raise CorpusError(f"{bad[0]}{more}; fix them, or leave them out with bad_songs skip")
    if bad:
        logger.warning("left out %d song(s) with problems (listed above)", len(bad))
    for group, good in out.items():
        if not good:
            raise CorpusError(f"the {group} set is empty: all its {len(folders[group])} songs have problems")
    return out


def prepare(root=None, outdir=None, *, overwrite=False, config=None, dry_run=False, mixture=None,
            valid_fraction=None, seed=None, **keys):
    """Write the data dirs of a folder corpus; returns ``{set name: Path}`` (``{}`` for a dry run).

    Args:
        root: ``corpus_dir``. outdir: where the data dirs go (``<prefix>{train,valid,test}``).
        config: YAML file (or dict) of description keys; keyword arguments override it.
        mixture: a pattern, ``"sum"``, or ``"file"`` (the default pattern; ``prepare_data --mixture``).
        dry_run: check every song and log the plan, write nothing.
        keys: any other key of :data:`DEFAULTS`.
    Songs with problems are left out (``bad_songs="skip"``) before the held-out sets are drawn.
    """
    from tqdm import tqdm

    if root is not None:
        keys["corpus_dir"] = root
    d = describe(config, mixture=None if mixture == "file" else mixture, valid_fraction=valid_fraction, seed=seed,
                 **keys)
    folders = song_folders(d)
    if not dry_run:
        check_targets(outdir, [f"{d['prefix']}{s}" for s in SPLITS], overwrite)
    records = {r["dir"]: r for group in check_songs(folders, d).values() for r in group}
    splits = hold_out({g: [p for p in songs if p in records] for g, songs in folders.items()}, d)
    names = {s: f"{d['prefix']}{s}" for s in splits}
    n_conform = sum(records[p]["conform"] for songs in splits.values() for p in songs)
    for split, songs in splits.items():
        logger.info("%s: %d songs (%s%s)", names[split], len(songs), ", ".join(records[p]["utt"] for p in songs[:4]),
                    ", ..." if len(songs) > 4 else "")
    if dry_run:
        logger.info("dry run: nothing written; %d song(s) would be conformed", n_conform)
        return {}
    wavdir = Path(outdir) / f"{d['prefix']}wav"
    if n_conform:
        logger.info("conforming %d song(s) whose files differ in rate, channels or length -> %s", n_conform, wavdir)
    sources, out = list(d["sources"]), {}
    for split, songs in splits.items():
        wav, srcs, utt2dur = {}, {name: {} for name in sources}, {}
        for song_dir in tqdm(songs, desc=f"writing {names[split]}", disable=n_conform < 5, leave=False):
            song = records[song_dir]
            wav[song["utt"]], specs, utt2dur[song["utt"]] = _song_specs(song, sources, wavdir / split)
            for name in sources:
                srcs[name][song["utt"]] = specs[name]
        out[names[split]] = (wav, srcs, utt2dur)
    made = write_sets(outdir, out, overwrite=overwrite)
    for split in SPLITS:  # a set that an earlier run made and this description does not make is stale
        stale = Path(outdir) / f"{d['prefix']}{split}"
        if overwrite and split not in splits and (stale / "wav.scp").is_file():
            logger.info("removing %s: this description makes no %s set", stale, split)
            shutil.rmtree(stale)
    return made
