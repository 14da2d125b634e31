"""Frame-exact PyAV decoding (hf_vssl.video_decoding) on real encoded files."""

import dataclasses
import io
import os
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from hf_vssl.data.encoding import encode_video
from hf_vssl.video_decoding import VideoDecodeError, VideoInfo, VideoReader, read_frames

from .video_factory import (
    CODECS,
    index_frames,
    noise_frames,
    read_index,
    vfr_timestamps,
    write_bad_files,
    write_end_trimmed_mp4,
    write_index_video,
    write_one_frame_video,
    write_truncated_copy,
    write_vfr_index_video,
    write_video,
)

LONG_FRAMES, LONG_GOP = 300, 32


def counting_reader(decoded: list) -> type:
    """A VideoReader that appends the timestamp of every frame it decodes to `decoded`."""

    class CountingReader(VideoReader):
        def _demux_decode(self):
            for frame in super()._demux_decode():
                decoded.append(frame.pts)
                yield frame

    return CountingReader


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    """300-frame index videos with a keyframe every 32 frames, one per codec (h264 has B-frames)."""
    folder = tmp_path_factory.mktemp("long")
    return {
        codec: write_index_video(
            folder / f"long_{codec}.mp4", LONG_FRAMES, (48, 64), codec=codec, gop=LONG_GOP
        )
        for codec in CODECS
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def index_lists(num_frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    stride = 2.37  # a real-valued stride as clip samplers draw it, rounded to frame positions
    return {
        "random": rng.integers(0, num_frames, 24),
        "strided": np.round(np.arange(16) * stride + 40.3).astype(int),
        "reverse": np.arange(num_frames - 1, -1, -11),
        "repeats": np.array([7, 7, 3, 250, 7, 3, 3]),
        "deep_seek": np.array([290, 291, 299, 260]),
        "first_and_last": np.array([0, num_frames - 1]),
    }


# ----------------------------------------------------------------------------------------------------------
# exactness
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
def test_exact_frames_for_every_index_pattern(long_videos, codec):
    with VideoReader(long_videos[codec]) as reader:
        assert reader.info == VideoInfo(num_frames=LONG_FRAMES, fps=pytest.approx(25.0), height=48, width=64)
        assert reader.keyframe_indices == list(range(0, LONG_FRAMES, LONG_GOP))
        for name, indices in index_lists(LONG_FRAMES).items():
            frames = reader.get_frames(indices)
            assert frames.shape == (len(indices), 48, 64, 3) and frames.dtype == np.uint8, name
            assert read_index(frames).tolist() == indices.tolist(), name


def test_accepts_lists_ranges_and_integer_floats(long_videos):
    with VideoReader(long_videos["mpeg4"]) as reader:
        assert read_index(reader.get_frames(range(5, 9))).tolist() == [5, 6, 7, 8]
        assert read_index(reader.get_frames([9.0, 2.0])).tolist() == [9, 2]
        assert read_index(reader.get_frames(np.array([4], dtype=np.int32))).tolist() == [4]
        assert reader.get_frames([]).shape == (0, 48, 64, 3)
        with pytest.raises(ValueError, match="integers"):
            reader.get_frames([1.5])


def test_seeks_instead_of_decoding_everything(long_videos):
    """Frames near the end cost one GOP, not the whole file; far-apart frames are reached by seeking."""
    decoded = []
    CountingReader = counting_reader(decoded)

    with CountingReader(long_videos["libx264"]) as reader:
        assert read_index(reader.get_frames([290])).tolist() == [290]
        # keyframe 288 -> 290, plus what the B-frame reorder delay holds back
        assert len(decoded) <= 8
        decoded.clear()
        assert read_index(reader.get_frames([5, 200])).tolist() == [5, 200]
        assert len(decoded) <= 2 * LONG_GOP  # two short runs, not frames 5..200


def test_variable_frame_rate_uses_timestamps(tmp_path):
    path, pts = write_vfr_index_video(tmp_path / "vfr.mp4", num_frames=60, seed=3)
    gaps = np.diff(pts)
    assert gaps.min() * 3 < gaps.max()  # really variable: fps arithmetic would pick wrong frames
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 60
        expected_fps = (len(pts) - 1) / ((pts[-1] - pts[0]) / 1000)
        assert reader.info.fps == pytest.approx(expected_fps, rel=0.01)
        indices = np.random.default_rng(0).permutation(60)
        assert read_index(reader.get_frames(indices)).tolist() == indices.tolist()
        # the frame that sits at the middle *time* is not the middle *index*; we return by index
        assert read_index(reader.get_frames([30])).tolist() == [30]


@pytest.mark.parametrize("rotation", [90, 180, 270, -90])
def test_rotation_metadata_gives_display_orientation(tmp_path, rotation):
    path = write_index_video(tmp_path / "rot.mp4", 12, (48, 80), rotation=rotation)
    quarter_turns = (rotation // 90) % 4
    with VideoReader(path) as reader:
        assert reader.rotation == quarter_turns * 90
        portrait = quarter_turns % 2 == 1
        assert (reader.info.height, reader.info.width) == ((80, 48) if portrait else (48, 80))
        frames = reader.get_frames([3, 11, 0])
        assert frames.shape == (3, *((80, 48) if portrait else (48, 80)), 3)
        # counter-clockwise display rotation: undoing it must give back the stored index pattern
        assert read_index(np.rot90(frames, -quarter_turns, axes=(1, 2))).tolist() == [3, 11, 0]
        resized = reader.get_frames([5], size=(40, 30))  # size is in display orientation
        assert resized.shape == (1, 40, 30, 3)
        assert read_index(np.rot90(resized, -quarter_turns, axes=(1, 2))).tolist() == [5]


@pytest.mark.parametrize("codec", CODECS)
def test_odd_sizes_and_resize(tmp_path, codec):
    path = write_index_video(tmp_path / f"odd_{codec}.mp4", 20, (61, 97), codec=codec, gop=6)
    with VideoReader(path) as reader:
        assert (reader.info.height, reader.info.width) == (61, 97)
        assert read_index(reader.get_frames([19, 0, 8])).tolist() == [19, 0, 8]
        small = reader.get_frames([4, 4, 13], size=(33, 47))
        assert small.shape == (3, 33, 47, 3)
        assert read_index(small).tolist() == [4, 4, 13]


def test_resized_frames_match_a_resize_of_full_frames(long_videos):
    with VideoReader(long_videos["mpeg4"]) as reader:
        full = reader.get_frames([10]).astype(np.float32)
        half = reader.get_frames([10], size=(24, 32)).astype(np.float32)
    block_mean = full.reshape(1, 24, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(half - block_mean).mean() < 8


def test_container_formats(tmp_path):
    frames = index_frames(30, (32, 48))
    for name, codec in [("clip.mkv", "libx264"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4")]:
        path = tmp_path / name
        from .video_factory import write_video

        write_video(path, frames, codec=codec, gop=7)
        with VideoReader(path) as reader:
            assert reader.info.num_frames == 30, name
            assert read_index(reader.get_frames([29, 1, 15])).tolist() == [29, 1, 15], name


def test_declared_frame_count_above_the_shown_frames_is_not_truncation(tmp_path):
    """An AVI counts its dropped frames (empty chunks) and an MP4 edit list may hide stored frames: both
    declare more frames than they show, and every shown frame decodes."""
    pts = [i + i // 3 for i in range(30)]  # every fourth time slot dropped
    dropped = write_video(
        tmp_path / "dropped.avi",
        index_frames(30, (32, 32)),
        codec="mpeg4",
        gop=10,
        pts=pts,
        time_base=Fraction(1, 25),
    )
    trimmed = write_end_trimmed_mp4(tmp_path / "trimmed.mp4", 30, keep_frames=20, size=(32, 32), gop=10)
    for path, shown in ((dropped, 30), (trimmed, 20)):
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames > shown, path.name
        with VideoReader(path) as reader:
            assert reader.info.num_frames == reader.decodable_frames == shown, path.name
            backwards = list(range(shown - 1, -1, -1))
            assert read_index(reader.get_frames(backwards)).tolist() == backwards, path.name


def test_file_cut_between_two_packets_is_truncated(tmp_path):
    """A download cut exactly at a packet boundary demuxes cleanly, only shorter; the MP4 index still locates
    the missing frames, so the file is reported truncated rather than taken for a shorter video."""
    full = write_index_video(tmp_path / "full.mp4", 30, (32, 32), gop=10, faststart=True)
    with av.open(str(full)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: sum(packets[12])])
    with VideoReader(cut) as reader:
        assert reader.info.num_frames == 30 and 0 < reader.decodable_frames < 30
        with pytest.raises(VideoDecodeError) as info:
            reader.get_frames([29])
        assert info.value.reason == "truncated"


def test_mpegts_frames_of_the_first_gop(tmp_path):
    """MPEG-TS timestamps do not start at 0 and a seek to the first keyframe lands on the second one; the
    frames before it must still be the right ones."""
    path = write_index_video(tmp_path / "clip.ts", 40, (32, 32), gop=10)  # libx264 with B-frames
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 40 and reader.keyframe_indices == [0, 10, 20, 30]
        for indices in ([0], [9, 0, 5], [35, 2], list(range(39, -1, -1))):
            assert read_index(reader.get_frames(indices)).tolist() == indices


def test_raw_elementary_stream_without_timestamps(tmp_path):
    """A raw .h264 stream has no timestamps and its demuxer refuses every seek, even to the start: frames are
    counted from the start of the reopened input, for every kind of source and on every call."""
    path = write_index_video(tmp_path / "clip.h264", 30, (32, 32), gop=10, container_format="h264")
    data = path.read_bytes()
    for src in (path, data, io.BytesIO(data)):
        with VideoReader(src) as reader:
            assert reader.info.num_frames == 30 and reader.keyframe_indices == [0]
            assert read_index(reader.get_frames([3, 29, 0])).tolist() == [3, 29, 0]
            assert read_index(reader.get_frames([17])).tolist() == [17]


def test_read_errors_while_decoding_raise_video_decode_error():
    """An I/O error in the middle of decoding (a network file object that drops) must reach the data loader as
    the VideoDecodeError it skips, not as an OSError that ends the run."""

    class DroppingFile(io.BytesIO):
        dropped = False

        def read(self, size=-1):
            if self.dropped:
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    frames = index_frames(40, (128, 128))
    frames[..., 1] = noise_frames(40, (128, 128))[..., 1]  # larger than FFmpeg's read buffer
    source = DroppingFile(encode_video(frames, codec="mpeg4", gop=10))
    with VideoReader(source, name="remote/clip") as reader:
        assert read_index(reader.get_frames([3, 25])).tolist() == [3, 25]
        source.dropped = True
        with pytest.raises(VideoDecodeError, match="remote/clip") as info:
            reader.get_frames([5, 35])
    assert info.value.reason == "decode failed" and "connection reset" in info.value.detail


# ----------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------
def test_every_input_kind_gives_the_same_frames(long_videos):
    path = long_videos["libx264"]
    data = Path(path).read_bytes()
    indices = [100, 3, 100]
    expected = read_frames(path, indices)
    sources = {
        "str": str(path),
        "path": Path(path),
        "bytes": data,
        "bytearray": bytearray(data),
        "file": io.BytesIO(data),
        "dict_bytes": {"bytes": data, "path": "ignored.mp4"},
        "dict_path": {"bytes": None, "path": str(path)},
        "file_url": f"file://{path}",
    }
    for kind, src in sources.items():
        np.testing.assert_array_equal(read_frames(src, indices), expected, err_msg=kind)


def test_urls_go_to_ffmpeg_and_fail_as_unopenable():
    """The decoder reads no remote files itself (the data engine fetches ``hf://`` paths): a URL goes to FFmpeg,
    and one whose protocol FFmpeg lacks is a video that cannot be opened, named by its URL."""
    with pytest.raises(VideoDecodeError, match="hf://datasets/org/set/clip.mp4") as info:
        VideoReader("hf://datasets/org/set/clip.mp4")
    assert info.value.reason == "cannot open"


def test_one_frame_video(tmp_path):
    with VideoReader(write_one_frame_video(tmp_path / "one.mp4")) as reader:
        assert reader.info.num_frames == 1
        assert read_index(reader.get_frames([0, 0, 0])).tolist() == [0, 0, 0]


def test_in_memory_encoded_bytes():
    data = encode_video(index_frames(10, (32, 32)), codec="mpeg4", container_format="matroska")
    assert read_index(read_frames(data, [9, 0])).tolist() == [9, 0]


# ----------------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", "empty file"),
        ("text", "cannot open"),
        ("audio_only", "no video stream"),
        ("truncated_no_index", "cannot open"),
    ],
)
def test_unusable_files_raise_naming_the_file(bad_files, kind, reason):
    path = bad_files[kind]
    with pytest.raises(VideoDecodeError) as info:
        VideoReader(path)
    assert info.value.reason == reason
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_truncated_file_decodes_what_exists_and_raises_for_the_rest(bad_files):
    path = bad_files["truncated"]
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 60  # what the file announces
        assert 0 < reader.decodable_frames < 60
        ok = list(range(reader.decodable_frames))
        assert read_index(reader.get_frames(ok)).tolist() == ok
        with pytest.raises(VideoDecodeError, match="truncated") as info:
            reader.get_frames([0, 59])
        assert info.value.reason == "truncated" and str(path) in str(info.value)


def test_missing_file_and_empty_bytes():
    with pytest.raises(VideoDecodeError, match="cannot open") as info:
        VideoReader("/nonexistent/clip.mp4")
    assert "/nonexistent/clip.mp4" in str(info.value)
    with pytest.raises(VideoDecodeError, match="empty file"):
        VideoReader(b"", name="train/abc")
    with pytest.raises(VideoDecodeError, match="train/abc"):
        VideoReader({"bytes": None, "path": None}, name="train/abc")


def test_out_of_range_indices(long_videos):
    with VideoReader(long_videos["mpeg4"]) as reader:
        for bad in ([LONG_FRAMES], [-1], [0, LONG_FRAMES + 5]):
            with pytest.raises(VideoDecodeError) as info:
                reader.get_frames(bad)
            assert info.value.reason == "index out of range"
            assert "long_mpeg4.mp4" in str(info.value)


def test_closed_reader_refuses(long_videos):
    reader = VideoReader(long_videos["mpeg4"])
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        reader.get_frames([0])


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(VideoDecodeError("a/b.mp4", "truncated", "frame 9")))
    assert (err.source, err.reason, err.detail) == ("a/b.mp4", "truncated", "frame 9")


def test_no_file_handle_or_memory_leak(long_videos, bad_files):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    data = Path(long_videos["mpeg4"]).read_bytes()

    def churn(n: int) -> None:
        for i in range(n):
            with VideoReader(long_videos["libx264"]) as reader:
                reader.get_frames([i % LONG_FRAMES, 150])
            read_frames(data, [i % 10])
            for kind in ("text", "audio_only", "empty"):
                with pytest.raises(VideoDecodeError):
                    VideoReader(bad_files[kind])
            VideoReader(long_videos["mpeg4"]).get_frames([1])  # never closed explicitly: GC must release it

    churn(20)  # warm-up: allocator pools, codec tables
    fds, rss = open_fds(), rss_mb()
    churn(250)
    assert open_fds() == fds
    assert rss_mb() - rss < 40


@pytest.mark.parametrize("thread_type", ["AUTO", "FRAME", "SLICE"])
def test_threaded_decoding_gives_identical_frames(long_videos, thread_type):
    indices = index_lists(LONG_FRAMES)["random"]
    with VideoReader(long_videos["libx264"]) as reader:
        expected = reader.get_frames(indices)
    with VideoReader(long_videos["libx264"], thread_type=thread_type, thread_count=2) as reader:
        np.testing.assert_array_equal(reader.get_frames(indices), expected)


def test_vfr_timestamps_helper_is_strictly_increasing():
    pts = vfr_timestamps(50, seed=1)
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))


# ----------------------------------------------------------------------------------------------------------
# exact counts and filters, each against an independent computation
# ----------------------------------------------------------------------------------------------------------
def _frames_plain_pyav_decodes_right(path) -> int:
    """Leading frames that plain PyAV decodes to the right picture: a cut packet may still decode, to garbage."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError:
        pass  # the cut: keep what decoded before it
    right = 0
    for position, frame in enumerate(frames):
        if read_index(frame[None])[0] != position:
            break
        right += 1
    return right


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_truncated_frame_count_equals_what_plain_pyav_decodes(tmp_path, codec):
    full = write_index_video(tmp_path / "full.mp4", 60, (64, 64), codec=codec, gop=10, faststart=True)
    for keep in (0.5, 0.6, 0.77, 0.9):
        cut = write_truncated_copy(full, tmp_path / f"cut_{keep}.mp4", keep)
        expected = _frames_plain_pyav_decodes_right(cut)
        with VideoReader(cut) as reader:
            assert 0 < reader.decodable_frames == expected < 60, (codec, keep)
            indices = list(range(expected))
            assert read_index(reader.get_frames(indices)).tolist() == indices


def test_a_target_on_a_keyframe_decodes_one_frame(long_videos):
    """Seeking to the keyframe at or before the target: a target that is a keyframe costs exactly one frame."""
    decoded = []
    CountingReader = counting_reader(decoded)

    for codec in ("libx264", "mpeg4"):
        with CountingReader(long_videos[codec]) as reader:
            for keyframe in reader.keyframe_indices[1:]:
                decoded.clear()
                assert read_index(reader.get_frames([keyframe])).tolist() == [keyframe]
                assert len(decoded) == 1, (codec, keyframe, len(decoded))


def test_resize_filter_is_bilinear(tmp_path):
    """Noise separates resize filters: against PIL's bilinear resize of the full frame the decoder's bilinear
    resize differs by about 6 levels on average, its area filter by 8, nearest neighbour by 40."""
    from PIL import Image

    path = write_video(tmp_path / "noise.mp4", noise_frames(4, (96, 128)))
    with VideoReader(path) as reader:
        full = reader.get_frames([2])[0]
        small = reader.get_frames([2], size=(36, 52))[0].astype(np.float32)
    errors = {
        name: np.abs(small - np.asarray(Image.fromarray(full).resize((52, 36), pil_filter))).mean()
        for name, pil_filter in (("bilinear", Image.BILINEAR), ("nearest", Image.NEAREST))
    }
    assert errors["bilinear"] < 10 < 3 * errors["bilinear"] < errors["nearest"], errors


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_iter_frames_yields_every_frame_in_order(long_videos, codec, bad_files):
    with VideoReader(long_videos[codec]) as reader:
        frames = list(reader.iter_frames())
        assert read_index(np.stack(frames)).tolist() == list(range(LONG_FRAMES))
        small = next(iter(reader.iter_frames(size=(24, 32))))
        assert small.shape == (24, 32, 3) and read_index(small[None]).tolist() == [0]
    # a truncated file is refused before its first frame, so a re-encoded copy is never cut short silently
    with VideoReader(bad_files["truncated"]) as reader:
        seen = []
        with pytest.raises(VideoDecodeError, match="truncated"):
            for frame in reader.iter_frames():
                seen.append(frame)
        assert seen == []


# ----------------------------------------------------------------------------------------------------------
# display order where the container's timestamps are not display times
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bframe_avi(tmp_path_factory):
    """h264 with B-frames in AVI: its packet timestamps count packets in decode order (1, 2, 3, ...), while
    the frames come out of the decoder as 1, 3, 2, 5, 4, ..."""
    path = write_index_video(tmp_path_factory.mktemp("avi") / "bframes.avi", 96, (32, 48), gop=24)
    with av.open(str(path)) as container:
        packets = [p.pts for p in container.demux(video=0) if p.size]
    assert packets == sorted(packets), "the AVI muxer should write decode-order timestamps"
    return path


def test_avi_with_b_frames_reads_exact_frames(bframe_avi):
    stride = np.round(np.arange(12) * 3.4 + 5.2).astype(int)  # a real-valued stride, as samplers draw it
    with VideoReader(bframe_avi) as reader:
        assert reader.info.num_frames == reader.decodable_frames == 96
        assert reader.keyframe_indices == [0, 24, 48, 72]
        for indices in ([0], [1], [2], [47], [48], [49], [95], [46, 47, 48, 49, 50], [23, 25], stride):
            assert read_index(reader.get_frames(indices)).tolist() == list(indices)
        assert read_index(reader.get_frames(np.arange(96))).tolist() == list(range(96))


def test_avi_with_b_frames_through_read_video(bframe_avi):
    from hf_vssl.video_processing_vssl import clip_frame_indices, read_video

    clips = read_video(bframe_avi, 8, frame_stride=4, num_clips=2)
    expected = clip_frame_indices(96, 8, 4, 2)
    assert read_index(clips.reshape(-1, *clips.shape[2:])).reshape(2, 8).tolist() == expected.tolist()
    assert read_index(read_video(bframe_avi)).tolist() == list(range(96))


def test_the_display_order_of_a_file_is_scanned_once_per_process(bframe_avi, tmp_path):
    with VideoReader(bframe_avi) as first, VideoReader(bframe_avi) as second:
        assert second._table is first._table
    copy = tmp_path / "copy.avi"
    copy.write_bytes(bframe_avi.read_bytes())  # another file (identity: path, size, mtime) is scanned anew
    with VideoReader(copy) as third, VideoReader(bframe_avi.read_bytes()) as from_bytes:
        assert third._table is not first._table and third._table.pts == first._table.pts
        assert from_bytes._table.pts == first._table.pts


def test_a_table_that_disagrees_with_the_decoder_is_refused(bframe_avi):
    """The safety net under every table: frames coming out of the decoder against the table's order end the
    read with a reason instead of returning the wrong frames."""
    with VideoReader(bframe_avi) as reader:
        pts = list(reader._table.pts)
        pts[1], pts[2] = pts[2], pts[1]  # a table in decode order, as before the fix
        reader._table = dataclasses.replace(reader._table, pts=pts)
        reader._pts_to_index = {p: i for i, p in enumerate(pts)}
        with pytest.raises(VideoDecodeError) as info:
            reader.get_frames([5])
        assert info.value.reason == "unknown frame order"


def _write_mpeg2_with_b_frames(path: Path, num_frames: int, size: tuple[int, int], gop: int) -> Path:
    """MPEG-2 video with two B-frames per P-frame (the project's encoder writes MPEG-2 without B-frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt, stream.gop_size, stream.max_b_frames, stream.bit_rate = "yuv420p", gop, 2, 400_000
        for array in index_frames(num_frames, size):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _cut_where_a_reference_frame_lost_its_b_frames(path: Path, dst: Path) -> Path:
    """Cut ``path`` cleanly before the first B-frame of the last reference frame that has B-frames."""
    with av.open(str(path)) as container:
        packets = [(p.pts, p.pos) for p in container.demux(video=0) if p.size]
    cut = max(k for k in range(1, len(packets) - 2) if packets[k][0] > packets[k + 1][0])
    dst.write_bytes(path.read_bytes()[: packets[cut + 1][1]])
    with av.open(str(dst)) as container:
        kept = [p.pts for p in container.demux(video=0) if p.size and not p.is_corrupt]
    assert kept[-1] == packets[cut][0], "the cut should keep the reference frame and lose its B-frames"
    return dst


@pytest.mark.parametrize("name", ["clip.mkv", "clip.mpg"])
def test_cut_with_b_frames_is_truncated_not_shifted(tmp_path, name):
    """Matroska cut right after a P-frame whose B-frames are gone, MPEG-PS cut mid-stream (damaged packets
    followed by whole ones): no frame may move into a lost frame's position; every frame reported decodable
    is the right one."""
    if name.endswith(".mkv"):
        full = write_index_video(tmp_path / name, 300, (48, 64), gop=32)
        cut = _cut_where_a_reference_frame_lost_its_b_frames(full, tmp_path / f"cut_{name}")
    else:
        full = _write_mpeg2_with_b_frames(tmp_path / name, 300, (48, 64), gop=32)
        cut = write_truncated_copy(full, tmp_path / f"cut_{name}", 0.3)
    with VideoReader(cut) as reader:
        n = reader.decodable_frames
        assert 0 < n <= reader.info.num_frames <= 300
        assert read_index(reader.get_frames(np.arange(n))).tolist() == list(range(n))
        assert read_index(reader.get_frames([n - 1, 0, n // 2])).tolist() == [n - 1, 0, n // 2]


def test_mpeg_program_stream_after_a_seek(tmp_path):
    path = write_index_video(tmp_path / "clip.mpg", 80, (32, 32), gop=16)  # libx264 with B-frames
    with VideoReader(path) as reader:
        assert reader.info.num_frames == 80
        for indices in ([79], [33, 16, 15], [64, 47, 48], list(range(79, -1, -7))):
            assert read_index(reader.get_frames(indices)).tolist() == indices
