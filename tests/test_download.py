"""Downloads against a local http.server: mirrors in order, resume, md5, extraction, failure."""
import functools
import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from detrlib.data.download import Archive, DownloadError, archives_for, download, download_voc
from detrlib.data.voc import VOCDataset, parse_sets
from vocfiles import obj, write_voc


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring ``Range: bytes=N-`` when the server allows it."""

    ranges = True
    seen = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Range")))
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        if self.ranges and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (RangeHandler,), {"seen": [], "ranges": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, handler
    httpd.shutdown()


@pytest.fixture
def voc_tarball(tmp_path):
    """A small VOCdevkit tarball like VOC's own, and its md5."""
    src = tmp_path / "src"
    write_voc(src, "VOC2007", "trainval", {"000001": (40, 30, [obj("cat", (2, 2, 20, 20))]),
                                           "000002": (40, 30, [obj("dog", (5, 5, 30, 25))])})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(src / "VOCdevkit", arcname="VOCdevkit")
    data = buffer.getvalue()
    return data, hashlib.md5(data).hexdigest()


def test_mirrors_are_tried_in_order_and_the_archive_extracts_into_root(server, voc_tarball, tmp_path):
    url, served, handler = server
    data, md5 = voc_tarball
    (served / "voc.tar").write_bytes(data)
    archives = {"VOC2007-trainval": Archive("voc.tar", md5, (f"{url}/missing/voc.tar", f"{url}/voc.tar"),
                                            ("VOC2007:trainval",))}
    root = download_voc(tmp_path / "drive", ["VOC2007-trainval"], tmp_path / "dl", archives)
    assert [p for p, _ in handler.seen] == ["/missing/voc.tar", "/voc.tar"]
    ds = VOCDataset(parse_sets(root, ["VOC2007:trainval"]))
    assert len(ds) == 2
    download_voc(tmp_path / "drive", ["VOC2007-trainval"], tmp_path / "dl", archives)  # done: no new request
    assert len(handler.seen) == 2


def test_partial_download_resumes_with_a_range_request_and_says_so(server, voc_tarball, tmp_path, capsys):
    url, served, handler = server
    data, md5 = voc_tarball
    (served / "voc.tar").write_bytes(data)
    dest = tmp_path / "dl" / "voc.tar"
    dest.parent.mkdir()
    (tmp_path / "dl" / "voc.tar.part").write_bytes(data[:5000])
    download([f"{url}/voc.tar"], dest, md5)
    assert handler.seen == [("/voc.tar", "bytes=5000-")]
    assert dest.read_bytes() == data and not (tmp_path / "dl" / "voc.tar.part").exists()
    assert "resuming voc.tar: 4.9 KiB came in an earlier, interrupted download" in capsys.readouterr().out


def test_server_without_ranges_restarts_the_download(server, voc_tarball, tmp_path, capsys):
    url, served, handler = server
    handler.ranges = False
    data, md5 = voc_tarball
    (served / "voc.tar").write_bytes(data)
    (tmp_path / "voc.tar.part").write_bytes(b"x" * 100)
    assert download([f"{url}/voc.tar"], tmp_path / "voc.tar", md5).read_bytes() == data
    assert "cannot resume a download: starting voc.tar over" in capsys.readouterr().out


def test_md5_mismatch_moves_on_to_the_next_mirror(server, voc_tarball, tmp_path):
    url, served, handler = server
    data, md5 = voc_tarball
    (served / "bad.tar").write_bytes(data[:-10] + b"0123456789")
    (served / "good.tar").write_bytes(data)
    download([f"{url}/bad.tar", f"{url}/good.tar"], tmp_path / "voc.tar", md5)
    assert (tmp_path / "voc.tar").read_bytes() == data


def test_every_mirror_failing_gives_one_clear_message(server, tmp_path):
    url, served, handler = server
    (served / "bad.tar").write_bytes(b"not the archive")
    with pytest.raises(DownloadError) as info:
        download([f"{url}/gone.tar", f"{url}/bad.tar", "http://127.0.0.1:9/x.tar"], tmp_path / "voc.tar", "0" * 32)
    message = str(info.value)
    assert "could not download voc.tar from any mirror" in message
    assert f"{url}/gone.tar: HTTP 404" in message and "md5 mismatch" in message and "127.0.0.1:9" in message
    assert "What to do" in message and str(tmp_path / "voc.tar") in message
    assert not (tmp_path / "voc.tar.part").exists()


def test_archives_for_sets():
    assert archives_for(["VOC2007:trainval", "VOC2012:trainval", "VOC2007:test"]) == [
        "VOC2007-trainval", "VOC2012-trainval", "VOC2007-test"]
    with pytest.raises(ValueError, match="no VOC archive holds 'VOC2010:train'"):
        archives_for(["VOC2010:train"])


def test_with_drive_mounted_a_new_session_extracts_from_drive_and_downloads_nothing(server, voc_tarball, tmp_path,
                                                                                   monkeypatch):
    """Archives and the COCO checkpoint are kept on Drive next to the runs; a new Colab session (a
    fresh VM disk) extracts VOC from there, digest-checked, and fetches nothing again."""
    from detrlib import colab
    from detrlib.checkpoint import fetch

    url, served, handler = server
    data, md5 = voc_tarball
    (served / "voc.tar").write_bytes(data)
    weights = b"official weights"
    name = f"detr-r50-{hashlib.sha256(weights).hexdigest()[:8]}.pth"
    (served / name).write_bytes(weights)
    archives = {"VOC2007-trainval": Archive("voc.tar", md5, (f"{url}/voc.tar",), ("VOC2007:trainval",))}
    monkeypatch.setattr(colab, "COLAB_DRIVE", tmp_path / "drive" / "MyDrive")
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    for session in ("first", "second"):
        monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / session))  # a new VM: an empty local disk
        for variable in ("DETRLIB_RUNS", "DETRLIB_DOWNLOADS"):  # through monkeypatch, so use_drive's values are undone
            monkeypatch.setenv(variable, "")
        colab.use_drive()  # the chapter's Drive cell
        root = download_voc(tmp_path / session / "voc", ["VOC2007-trainval"], archives=archives)
        assert len(VOCDataset(parse_sets(root, ["VOC2007:trainval"]))) == 2
        checkpoint = fetch(f"{url}/{name}")
        assert checkpoint == tmp_path / "drive" / "MyDrive" / "detrlib" / "downloads" / "checkpoints" / name
    assert [path for path, _ in handler.seen] == ["/voc.tar", f"/{name}"]  # the second session fetched nothing
    assert (tmp_path / "drive" / "MyDrive" / "detrlib" / "downloads" / "voc.tar").read_bytes() == data
    (tmp_path / "drive" / "MyDrive" / "detrlib" / "downloads" / "voc.tar").write_bytes(data[:100])  # half-written
    download_voc(tmp_path / "third" / "voc", ["VOC2007-trainval"], archives=archives)
    assert [path for path, _ in handler.seen][-1] == "/voc.tar"  # a damaged copy is fetched again, not used


def test_a_full_or_read_only_drive_is_one_line_naming_the_folder(server, voc_tarball, tmp_path, monkeypatch):
    import detrlib.data.download as downloads

    url, served, handler = server
    data, md5 = voc_tarball
    (served / "voc.tar").write_bytes(data)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DownloadError) as err:  # a folder that cannot be made, as on a read-only Drive
        download([f"{url}/voc.tar"], tmp_path / "a-file" / "downloads" / "voc.tar", md5)
    assert str(err.value).startswith(f"cannot write to {tmp_path / 'a-file' / 'downloads'} (")
    assert "\n" not in str(err.value) and "DETRLIB_DOWNLOADS" in str(err.value)

    class Full(io.BytesIO):
        def write(self, block):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(downloads, "open", lambda path, mode="r": Full(), raising=False)
    folder = tmp_path / "drive" / "downloads"
    with pytest.raises(DownloadError, match=r"^cannot write to .*downloads \(No space left on device\): free space"):
        download([f"{url}/voc.tar"], folder / "voc.tar", md5)
    assert not (folder / "voc.tar").exists()  # nothing half-written is kept as the archive
