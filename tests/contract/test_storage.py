"""One contract for every object-storage backend: a local directory, S3 (moto), and
the in-memory fake that the unit tests stand on."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from freight.api.routes.objects import presigner
from freight.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UrlError,
)
from freight.signing import UrlSigner
from freight.storage import (
    LocalStorage,
    MemoryStorage,
    ObjectInfo,
    S3Storage,
    Storage,
    open_storage,
)
from freight.storage.local import SYNC_IO_MAX_BYTES

MiB = 1 << 20
SECRET = b"contract-test-secret"


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET)


@pytest.fixture
def storage(storage_url: str, signer: UrlSigner) -> Storage:
    return open_storage(storage_url, presign=presigner(signer))


async def chunks_of(total: int, chunk: int = MiB, byte: int = 0) -> AsyncIterator[bytes]:
    """``total`` bytes in ``chunk``-sized pieces, each piece a distinct pattern."""
    sent = 0
    i = byte
    while sent < total:
        n = min(chunk, total - sent)
        yield bytes([i % 251]) * n
        sent += n
        i += 1


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([c async for c in storage.get_stream(key)])


def rss_bytes() -> int:
    """The process's resident set size now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- round trips -------------------------------------------------------------


async def test_put_get_stat_delete_round_trip(storage: Storage) -> None:
    """A put object reads back byte for byte, stats its size, and is gone after delete."""
    data = b'{"text": "hello"}'
    assert await storage.put("predictions/p1/input", data, content_type="application/json") == 17
    assert await storage.get("predictions/p1/input") == data
    info = await storage.stat("predictions/p1/input")
    assert info is not None
    assert (info.key, info.size) == ("predictions/p1/input", len(data))
    assert info.content_type in (None, "application/json")
    await storage.delete("predictions/p1/input")
    assert await storage.stat("predictions/p1/input") is None


async def test_put_overwrites(storage: Storage) -> None:
    """A second put under the same key replaces the object."""
    await storage.put("k", b"first")
    await storage.put("k", b"second, longer")
    assert await storage.get("k") == b"second, longer"


async def test_empty_object(storage: Storage) -> None:
    """An empty object exists with size 0 and streams as no bytes."""
    await storage.put("empty", b"")
    info = await storage.stat("empty")
    assert info is not None and info.size == 0
    assert await read_all(storage, "empty") == b""


async def test_large_put_goes_through(storage: Storage) -> None:
    """A put above the synchronous-write threshold (here 3 MiB) reads back intact."""
    data = os.urandom(3 * MiB)
    await storage.put("big", data)
    assert await storage.get("big") == data


async def test_put_stream_multi_chunk_reads_back_identical(storage: Storage) -> None:
    """20 MiB streamed in 1 MiB chunks comes back identical through get_stream."""
    total = 20 * MiB
    assert await storage.put_stream("stream/obj", chunks_of(total)) == total
    expected = b"".join([c async for c in chunks_of(total)])
    got = [c async for c in storage.get_stream("stream/obj", chunk_size=MiB)]
    assert b"".join(got) == expected
    assert len(got) > 1
    info = await storage.stat("stream/obj")
    assert info is not None and info.size == total


async def test_put_stream_within_limit_succeeds(storage: Storage) -> None:
    """A stream exactly at max_bytes is accepted."""
    assert await storage.put_stream("k", chunks_of(2 * MiB), max_bytes=2 * MiB) == 2 * MiB


async def test_put_stream_over_limit_leaves_nothing(storage: Storage) -> None:
    """Past max_bytes put_stream raises PayloadTooLargeError and no object is left."""
    with pytest.raises(PayloadTooLargeError) as info:
        await storage.put_stream("too/big", chunks_of(12 * MiB), max_bytes=7 * MiB)
    assert info.value.code == "payload_too_large"
    assert await storage.stat("too/big") is None
    if isinstance(storage, LocalStorage):  # no temp file left behind either
        folder = storage.root / "too"
        assert not folder.exists() or list(folder.iterdir()) == []


async def test_failed_overwrite_keeps_old_object(storage: Storage) -> None:
    """A put_stream that fails past max_bytes leaves the previous object untouched."""
    await storage.put("k", b"old")
    with pytest.raises(PayloadTooLargeError):
        await storage.put_stream("k", chunks_of(6 * MiB), max_bytes=MiB)
    assert await storage.get("k") == b"old"


async def test_put_stream_source_error_propagates_and_leaves_nothing(storage: Storage) -> None:
    """An error raised by the source iterator propagates and leaves no object."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await storage.put_stream("broken", broken())
    assert await storage.stat("broken") is None


# -- missing objects ---------------------------------------------------------


async def test_missing_key(storage: Storage) -> None:
    """A missing key: get and get_stream raise NotFoundError, stat returns None."""
    with pytest.raises(NotFoundError):
        await storage.get("nope/missing")
    with pytest.raises(NotFoundError):
        await read_all(storage, "nope/missing")
    assert await storage.stat("nope/missing") is None


async def test_delete_missing_is_fine(storage: Storage) -> None:
    """Deleting an object that does not exist is not an error."""
    await storage.delete("never/was")


async def test_prefix_is_not_an_object(storage: Storage) -> None:
    """A key's parent 'directory' is not itself an object."""
    await storage.put("a/b/c", b"1")
    assert await storage.stat("a/b") is None
    with pytest.raises(NotFoundError):
        await storage.get("a/b")


# -- keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/../b", "..", "./a", "a/", "sp ace", "q?x", "x" * 1025, "é"],
)
async def test_invalid_keys_rejected(storage: Storage, key: str) -> None:
    """Keys that are empty, absolute, traverse, or leave the safe alphabet are refused."""
    with pytest.raises(InvalidRequestError) as info:
        await storage.put(key, b"x")
    assert info.value.code == "invalid_key"
    with pytest.raises(InvalidRequestError):
        await storage.stat(key)


# -- put_file ----------------------------------------------------------------


async def test_put_file(storage: Storage, tmp_path: Path) -> None:
    """put_file stores a file: moved into place locally (no copy), uploaded to S3."""
    src = tmp_path / "upload.bin"
    data = os.urandom(6 * MiB + 123)
    src.write_bytes(data)
    inode = src.stat().st_ino
    assert await storage.put_file("files/upload", src) == len(data)
    assert await read_all(storage, "files/upload") == data
    local = storage.local_path("files/upload")
    if isinstance(storage, LocalStorage):
        assert local is not None
        assert not src.exists()
        assert local.stat().st_ino == inode  # renamed, not copied
    else:
        assert local is None
        assert src.exists()


async def test_local_put_file_across_filesystems_copies(
    local_storage_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a rename crosses filesystems (EXDEV), put_file streams a copy, then drops the source."""
    storage = open_storage(local_storage_url)
    src = tmp_path / "elsewhere.bin"
    data = os.urandom(3 * MiB)
    src.write_bytes(data)
    real_replace = os.replace

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)

    monkeypatch.setattr("freight.storage.local.os.replace", replace)
    assert await storage.put_file("files/x", src) == len(data)
    assert await storage.get("files/x") == data
    assert not src.exists()


async def test_put_file_missing_source(storage: Storage, tmp_path: Path) -> None:
    """put_file of a file that does not exist raises NotFoundError."""
    with pytest.raises(NotFoundError):
        await storage.put_file("k", tmp_path / "absent")


# -- presigned URLs ----------------------------------------------------------


async def test_presign_get(storage: Storage, signer: UrlSigner) -> None:
    """S3 presigns an absolute URL that serves the bytes; local a verifiable API path."""
    await storage.put("out/result.bin", b"the output")
    url = await storage.presign_get("out/result.bin", expires_s=60)
    if isinstance(storage, S3Storage):
        assert url.startswith("http")
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"the output"
    else:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc
        assert parts.path == "/v1/objects/out/result.bin"
        query = parse_qs(parts.query)
        signer.verify("GET", parts.path, query["expires"][0], query["sig"][0])


def _split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path, query["expires"][0], query["sig"][0]


async def test_local_presign_tampered_and_expired(local_storage_url: str) -> None:
    """A local signed URL fails verification when tampered with or expired."""
    signer = UrlSigner(SECRET)
    storage = open_storage(local_storage_url, presign=presigner(signer))
    await storage.put("out/a", b"a")
    path, expires, sig = _split(await storage.presign_get("out/a", expires_s=60))
    with pytest.raises(UrlError) as other_key:
        signer.verify("GET", "/v1/objects/out/b", expires, sig)
    assert other_key.value.code == "bad_signature"
    with pytest.raises(UrlError) as longer:
        signer.verify("GET", path, str(int(expires) + 3600), sig)
    assert longer.value.code == "bad_signature"
    with pytest.raises(UrlError) as late:
        signer.verify("GET", path, expires, sig, now=time.time() + 120)
    assert late.value.code == "url_expired"
    with pytest.raises(UrlError) as foreign:
        UrlSigner(b"another secret").verify("GET", path, expires, sig)
    assert foreign.value.code == "bad_signature"


async def test_local_presign_without_signer_is_a_config_error(local_storage_url: str) -> None:
    """Local storage opened without a signer refuses to presign."""
    storage = open_storage(local_storage_url)
    await storage.put("k", b"x")
    with pytest.raises(ConfigError):
        await storage.presign_get("k", expires_s=60)


# -- concurrency and memory --------------------------------------------------


async def test_concurrent_small_puts(storage: Storage) -> None:
    """Many concurrent small puts under distinct keys all land intact."""
    keys = [f"predictions/{i:04d}/output" for i in range(200)]
    await asyncio.gather(*(storage.put(k, k.encode()) for k in keys))
    results = await asyncio.gather(*(storage.get(k) for k in keys))
    assert results == [k.encode() for k in keys]


async def test_delete_prunes_empty_directories(local_storage_url: str) -> None:
    """Deleting the last object of a local 'directory' removes the directory too."""
    storage = open_storage(local_storage_url)
    big = b"x" * (SYNC_IO_MAX_BYTES + 1)  # small objects are rows, not files
    await storage.put("predictions/p9/input", big)
    await storage.put("predictions/p8/input", big)
    await storage.delete("predictions/p9/input")
    assert isinstance(storage, LocalStorage)
    assert not (storage.root / "predictions" / "p9").exists()
    assert (storage.root / "predictions" / "p8" / "input").exists()


async def test_streaming_200_mib_keeps_memory_flat(storage: Storage) -> None:
    """200 MiB through put_stream then get_stream grows RSS far less than the payload."""
    if isinstance(storage, MemoryStorage):
        pytest.skip("an in-memory object is held in memory by definition")
    total = 200 * MiB
    block = os.urandom(MiB)

    before = rss_bytes()
    peak = before

    async def source() -> AsyncIterator[bytes]:
        nonlocal peak
        for _ in range(total // MiB):
            peak = max(peak, rss_bytes())  # sampled while the upload is in flight
            yield block

    assert await storage.put_stream("huge", source(), max_bytes=total) == total
    peak = max(peak, rss_bytes())
    seen = 0
    async for chunk in storage.get_stream("huge", chunk_size=MiB):
        seen += len(chunk)
        peak = max(peak, rss_bytes())
    assert seen == total
    grown_mib = (peak - before) / MiB
    assert grown_mib < 80, f"RSS grew by {grown_mib:.0f} MiB"


# -- the factory -------------------------------------------------------------


def test_open_storage_plain_path(tmp_path: Path) -> None:
    """A plain path opens local storage rooted there."""
    storage = open_storage(str(tmp_path / "objs"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "objs").resolve()


def test_open_storage_file_url(tmp_path: Path) -> None:
    """file:///abs/dir opens local storage rooted at /abs/dir."""
    storage = open_storage((tmp_path / "o").as_uri())
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "o").resolve()


@pytest.mark.parametrize("url", ["gs://bucket", "ftp://host/x", "file://remote-host/x", ""])
def test_open_storage_unsupported(url: str) -> None:
    """An unsupported URL raises ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert url.split("?")[0] in info.value.message


def test_open_storage_s3_unknown_parameter() -> None:
    """A typo in an s3:// URL's parameters is a ConfigError, not silently ignored."""
    with pytest.raises(ConfigError, match="endpont"):
        open_storage("s3://bucket?endpont=http://127.0.0.1:1")


def test_open_storage_s3_from_url_only(s3_url: str) -> None:
    """An s3:// URL carrying endpoint, region and credentials opens S3 storage."""
    storage = open_storage(s3_url)
    assert isinstance(storage, S3Storage)
    assert storage.local_path("k") is None


async def test_small_local_objects_are_rows_and_large_ones_files(local_storage_url: str) -> None:
    """Local small objects live in the table (no file), large ones are files; either
    kind replaces the other under one key, and delete removes both."""
    storage = open_storage(local_storage_url)
    assert isinstance(storage, LocalStorage)
    big = b"b" * (SYNC_IO_MAX_BYTES + 1)
    await storage.put("o/k", b"small")
    assert storage.local_path("o/k") is None and not (storage.root / "o" / "k").exists()
    assert await storage.get("o/k") == b"small"
    assert (await storage.stat("o/k")).size == 5  # type: ignore[union-attr]
    assert b"".join([c async for c in storage.get_stream("o/k")]) == b"small"
    await storage.put("o/k", big)
    assert storage.local_path("o/k") == storage.root / "o" / "k"
    assert await storage.get("o/k") == big
    await storage.put("o/k", b"again small")
    assert await storage.get("o/k") == b"again small"
    await storage.delete("o/k")
    assert await storage.stat("o/k") is None
    with pytest.raises(NotFoundError):
        await storage.get("o/k")


async def test_put_many_writes_every_object(storage: Storage) -> None:
    """put_many stores small and large objects alike."""
    big = b"z" * (SYNC_IO_MAX_BYTES + 10)
    items = [(f"many/{i}", f"v{i}".encode()) for i in range(50)] + [("many/big", big)]
    await storage.put_many(items)
    for key, data in items:
        assert await storage.get(key) == data


# -- the in-memory fake --------------------------------------------------------


async def test_memory_presign_without_signer_is_a_config_error(memory_storage_url: str) -> None:
    """Memory storage opened without a signer refuses to presign, like local storage."""
    storage = open_storage(memory_storage_url)
    await storage.put("k", b"x")
    with pytest.raises(ConfigError):
        await storage.presign_get("k", expires_s=60)


async def test_memory_keeps_content_type_and_names_its_uris(memory_storage_url: str) -> None:
    """Memory storage stats the content type it was given; memory:///key is its URI."""
    storage = open_storage(memory_storage_url)
    assert isinstance(storage, MemoryStorage)
    await storage.put_stream("in/a", chunks_of(10), content_type="text/csv")
    assert await storage.stat("in/a") == ObjectInfo("in/a", 10, "text/csv")
    assert storage.key_for_uri("memory:///in/a") == "in/a"
    assert storage.key_for_uri("file:///in/a") is None
    assert storage.local_path("in/a") is None
    assert storage.keys() == ["in/a"]


async def test_memory_put_many_with_a_bad_key_writes_nothing(memory_storage_url: str) -> None:
    """put_many checks every key first: one invalid key and no object is written."""
    storage = open_storage(memory_storage_url)
    assert isinstance(storage, MemoryStorage)
    with pytest.raises(InvalidRequestError):
        await storage.put_many([("good", b"1"), ("../bad", b"2")])
    assert storage.keys() == []


async def test_memory_urls_open_separate_storages(memory_storage_url: str) -> None:
    """Each open_storage("memory://") is a new, empty storage."""
    first, second = open_storage(memory_storage_url), open_storage(memory_storage_url)
    await first.put("k", b"x")
    assert await second.stat("k") is None


# -- listing -----------------------------------------------------------------


async def list_infos(storage: Storage, prefix: str) -> list[ObjectInfo]:
    return [info async for info in storage.list(prefix)]


async def list_keys(storage: Storage, prefix: str) -> list[str]:
    return [info.key for info in await list_infos(storage, prefix)]


BIG = SYNC_IO_MAX_BYTES + 1  # local storage keeps this as a file, smaller ones as rows


async def test_list_empty_prefix_lists_everything_in_key_order(storage: Storage) -> None:
    """list("") yields every object once, in byte order of the keys (``/`` sorts between
    ``-``/``.`` and the digits: a walk of directories must not put ``a/b`` first), with
    its size; small and large objects alike."""
    sizes = {
        "a0": 3,
        "a/b": BIG,
        "a-c": 1,
        "a.x": BIG,
        "a/c/d": 5,
        "a/c-": BIG,
        "A": 2,
        "b": 0,
        "_u": 4,
        "~t": BIG,
        "z/z/z/z": 6,
    }
    for key, size in sizes.items():
        await storage.put(key, b"k" * size)
    infos = await list_infos(storage, "")
    assert [i.key for i in infos] == sorted(sizes, key=lambda k: k.encode())
    assert {i.key: i.size for i in infos} == sizes


async def test_list_on_empty_storage_and_unused_prefixes_yield_nothing(storage: Storage) -> None:
    """Nothing stored: nothing listed; a prefix no key has yields nothing either."""
    assert await list_keys(storage, "") == []
    assert await list_keys(storage, "data/") == []
    await storage.put("data/x1.csv", b"1")
    await storage.put("data/sub/y", b"x" * BIG)
    for prefix in ("nothing/", "nothing", "data/z", "data/x1.csvx", "data/sub/y/", "e", "data/-"):
        assert await list_keys(storage, prefix) == [], prefix


async def test_list_prefix_filters_including_mid_name(storage: Storage) -> None:
    """A prefix is a string prefix of the key, not a path: ``data/x`` matches
    ``data/x1.csv`` and everything under ``data/x/``; an exact key lists itself."""
    keys = [
        "data/x1.csv",
        "data/x2.csv",
        "data/x/nested",
        "data/y.csv",
        "data-other",
        "datax",
        "other/data/x1",
    ]
    for i, key in enumerate(keys):
        await storage.put(key, b"v" * (BIG if i % 2 else 1))
    assert await list_keys(storage, "data/x") == ["data/x/nested", "data/x1.csv", "data/x2.csv"]
    assert await list_keys(storage, "data/x1") == ["data/x1.csv"]
    assert await list_keys(storage, "data/x1.csv") == ["data/x1.csv"]
    assert await list_keys(storage, "data/x/") == ["data/x/nested"]
    assert await list_keys(storage, "data/") == [
        "data/x/nested",
        "data/x1.csv",
        "data/x2.csv",
        "data/y.csv",
    ]
    assert await list_keys(storage, "data") == [
        "data-other",
        "data/x/nested",
        "data/x1.csv",
        "data/x2.csv",
        "data/y.csv",
        "datax",
    ]
    assert await list_keys(storage, "d") == await list_keys(storage, "data")
    assert await list_keys(storage, "o") == ["other/data/x1"]


async def test_list_nested_directories(storage: Storage) -> None:
    """Keys several "directories" deep are listed whole, under any of their prefixes."""
    keys = ["n/a/b/c/d", "n/a/b/e", "n/a/f", "n/g", "n/a/b/c/h"]
    for key in keys:
        await storage.put(key, key.encode() * (4000 if key.endswith("e") else 1))
    assert await list_keys(storage, "n/") == sorted(keys)
    assert await list_keys(storage, "n/a/b/") == ["n/a/b/c/d", "n/a/b/c/h", "n/a/b/e"]
    assert await list_keys(storage, "n/a/b/c") == ["n/a/b/c/d", "n/a/b/c/h"]
    assert await list_keys(storage, "n/a/b/c/d") == ["n/a/b/c/d"]
    sizes = {i.key: i.size for i in await list_infos(storage, "n")}
    assert sizes["n/a/b/e"] == len(b"n/a/b/e") * 4000


async def test_list_shows_objects_of_every_write_path(storage: Storage, tmp_path: Path) -> None:
    """Objects written by put, put_many, put_stream and put_file are all listed, with
    their sizes (and their content types where the listing knows them)."""
    src = tmp_path / "upload.bin"
    src.write_bytes(b"f" * 70_000)
    await storage.put("w/put-small", b"s" * 10, content_type="text/plain")
    await storage.put("w/put-big", b"b" * BIG, content_type="application/octet-stream")
    await storage.put_many([("w/many-1", b"m"), ("w/many-2", b"m" * BIG)])
    assert await storage.put_stream("w/stream", chunks_of(300_000, 100_000), content_type="t/s")
    await storage.put_stream("w/stream-empty", chunks_of(0))
    await storage.put_file("w/file", src, content_type="text/csv")
    infos = {i.key: i for i in await list_infos(storage, "w/")}
    assert {k: i.size for k, i in infos.items()} == {
        "w/file": 70_000,
        "w/many-1": 1,
        "w/many-2": BIG,
        "w/put-big": BIG,
        "w/put-small": 10,
        "w/stream": 300_000,
        "w/stream-empty": 0,
    }
    expected_types = {
        "w/put-small": "text/plain",
        "w/put-big": "application/octet-stream",
        "w/stream": "t/s",
        "w/file": "text/csv",
    }
    for key, info in infos.items():
        if isinstance(storage, MemoryStorage):  # the memory fake knows every type
            assert info.content_type == expected_types.get(key), key
        else:
            assert info.content_type in (None, expected_types.get(key)), key


async def test_list_after_overwrite_and_delete(storage: Storage) -> None:
    """An overwritten object is listed once, at its new size, whichever of a small or a
    large object replaced the other; a deleted one is not listed."""
    await storage.put("o/big-then-small", b"b" * BIG)
    await storage.put("o/big-then-small", b"small")
    await storage.put("o/small-then-big", b"small")
    await storage.put("o/small-then-big", b"b" * BIG)
    await storage.put("o/gone", b"x")
    await storage.put("o/gone-big", b"x" * BIG)
    await storage.delete("o/gone")
    await storage.delete("o/gone-big")
    infos = await list_infos(storage, "o/")
    assert [(i.key, i.size) for i in infos] == [("o/big-then-small", 5), ("o/small-then-big", BIG)]


async def test_list_does_not_show_a_stream_in_flight(storage: Storage) -> None:
    """An object still being streamed in (a temp file, a multipart upload) is not listed
    until its upload completes; a failed one never is."""
    await storage.put("up/existing", b"e")
    started, release = asyncio.Event(), asyncio.Event()

    async def paused() -> AsyncIterator[bytes]:
        yield b"p" * (2 * MiB)
        started.set()
        await release.wait()
        yield b"q" * 100

    upload = asyncio.create_task(storage.put_stream("up/in-flight", paused()))
    await asyncio.wait_for(started.wait(), 10)
    assert await list_keys(storage, "") == ["up/existing"]
    assert await list_keys(storage, "up/in") == []
    release.set()
    assert await upload == 2 * MiB + 100
    with pytest.raises(PayloadTooLargeError):
        await storage.put_stream("up/too-big", chunks_of(3 * MiB), max_bytes=MiB)
    infos = await list_infos(storage, "up/")
    assert [(i.key, i.size) for i in infos] == [("up/existing", 1), ("up/in-flight", 2 * MiB + 100)]


async def test_list_many_objects_crosses_pages(storage: Storage) -> None:
    """1,200 objects (over S3's 1,000-key page and the local backend's 1,000-object step)
    are all listed, in order, and a prefix deep into them starts and stops right."""
    keys = [f"many/{i:04d}" for i in range(1200)]
    await storage.put_many([(key, key.encode()) for key in reversed(keys)])
    await storage.put("many0", b"after")
    await storage.put("man", b"before")
    infos = await list_infos(storage, "many/")
    assert [i.key for i in infos] == keys
    assert all(i.size == 9 for i in infos)
    assert await list_keys(storage, "many/11") == keys[1100:1200]
    assert await list_keys(storage, "many/10") == keys[1000:1100]
    assert len(await list_keys(storage, "")) == 1202


async def test_list_can_stop_early(storage: Storage) -> None:
    """A caller may stop part-way (the rest is never fetched) and list again."""
    await storage.put_many([(f"s/{i:02d}", b"x") for i in range(30)])
    stream = storage.list("s/")
    first = [await anext(stream) for _ in range(3)]
    await stream.aclose()  # type: ignore[attr-defined]
    assert [i.key for i in first] == ["s/00", "s/01", "s/02"]
    assert len(await list_keys(storage, "s/")) == 30


@pytest.mark.parametrize(
    "prefix",
    ["/abs", "/", "a//", "a//b", "../x", "a/./b", "a/../", "é", "sp ace", "q?x", "x" * 1025],
)
async def test_list_invalid_prefix_rejected(storage: Storage, prefix: str) -> None:
    """A prefix no valid key could start with (absolute, empty or dot segments, foreign
    characters) is an invalid_key error, not an empty listing."""
    with pytest.raises(InvalidRequestError) as info:
        await list_keys(storage, prefix)
    assert info.value.code == "invalid_key"


@pytest.mark.parametrize("prefix", ["a/.", "a/..", ".", "..", "a/b.freight-tmp"])
async def test_list_prefix_may_end_in_dots(storage: Storage, prefix: str) -> None:
    """A partial last segment may be ``.`` or ``..`` (``..b`` is a valid name) or end like
    a temp file's name: such prefixes are valid and match what they prefix."""
    await storage.put("a/..b", b"1")
    await storage.put("..c", b"2")
    await storage.put("a/b.freight-tmpx", b"3")
    expected = {
        "a/.": ["a/..b"],
        "a/..": ["a/..b"],
        ".": ["..c"],
        "..": ["..c"],
        "a/b.freight-tmp": ["a/b.freight-tmpx"],
    }
    assert await list_keys(storage, prefix) == expected[prefix]


async def test_local_list_merges_rows_and_files_across_pages(local_storage_url: str) -> None:
    """Local storage: interleaved small objects (rows) and files, over a thousand of
    each, come out as one ordered listing; none of the table's or temp files show."""
    storage = open_storage(local_storage_url)
    assert isinstance(storage, LocalStorage)
    rows = [f"m/{i:04d}" for i in range(0, 2100, 2)]
    files = [f"m/{i:04d}" for i in range(1, 2100, 2)]
    await storage.put_many([(key, b"r") for key in rows])
    for key in files:
        await storage.put_stream(key, chunks_of(2, 2))
    assert storage.local_path(files[0]) is not None and storage.local_path(rows[0]) is None
    infos = await list_infos(storage, "")
    assert [i.key for i in infos] == sorted(rows + files)
    assert all(i.size == (1 if i.key in rows else 2) for i in infos[:50])
    assert (storage.root / "@small-objects.sqlite").is_file()  # in the root, never listed
    assert all(i.content_type is None for i in infos)


async def test_local_list_skips_temp_files_foreign_names_and_symlinks(
    local_storage_url: str, tmp_path: Path
) -> None:
    """Local storage lists only what it could read back: no leftover temp file, no name
    outside the key alphabet, nothing through a symlink (never outside the root)."""
    storage = open_storage(local_storage_url)
    assert isinstance(storage, LocalStorage)
    await storage.put("d/real", b"x" * BIG)
    (storage.root / "d" / ".real.123.0.freight-tmp").write_bytes(b"half")
    (storage.root / "d" / "sp ace").write_bytes(b"foreign")
    (storage.root / "d" / "empty-dir").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (storage.root / "d" / "link-dir").symlink_to(outside, target_is_directory=True)
    (storage.root / "d" / "link-file").symlink_to(outside / "secret")
    (storage.root / "top-link").symlink_to(outside, target_is_directory=True)
    assert await list_keys(storage, "") == ["d/real"]
    assert await list_keys(storage, "d/") == ["d/real"]
    assert await list_keys(storage, "d/link-dir/") == []
    assert await list_keys(storage, "top-link/") == []
    assert await list_keys(storage, "top-link") == []


async def test_s3_list_is_relative_to_the_url_prefix(s3_url: str) -> None:
    """S3 storage on ``s3://bucket/pre/fix`` lists keys relative to its prefix and
    nothing beside it (``pre/fixed`` is not under ``pre/fix/``)."""
    parts = urlsplit(s3_url)
    whole = open_storage(s3_url)
    scoped = open_storage(f"s3://{parts.netloc}/pre/fix?{parts.query}")
    await scoped.put("data/a", b"1")
    await scoped.put("data/b", b"22")
    await whole.put("pre/fixed", b"x")
    await whole.put("pre/other", b"x")
    await whole.put("other", b"x")
    assert [(i.key, i.size) for i in await list_infos(scoped, "")] == [
        ("data/a", 1),
        ("data/b", 2),
    ]
    assert await list_keys(scoped, "data/b") == ["data/b"]
    assert await list_keys(whole, "pre/") == [
        "pre/fix/data/a",
        "pre/fix/data/b",
        "pre/fixed",
        "pre/other",
    ]


async def test_uri_for_key_names_the_object_key_for_uri_reads(storage: Storage) -> None:
    """Every backend names a key by a URI of its own (s3://bucket/prefix/key,
    file:///root/key, memory:///key) that key_for_uri turns back into the key."""
    await storage.put("tenants/t/sagemaker/a-b.out", b"x")
    uri = storage.uri_for_key("tenants/t/sagemaker/a-b.out")
    assert uri.split("://")[0] in ("s3", "file", "memory")
    assert storage.key_for_uri(uri) == "tenants/t/sagemaker/a-b.out"
