"""Pure parts of the no-silent-failures work: stencil declarations, hang-report parsing and
grouping, rank ranges, Slurm walltimes and the short kernel error text."""

import faulthandler
import tempfile

import pytest

from parcomp.launch.hang import Frame, HangWatch, parse_faulthandler
from parcomp.launch.slurm import SlurmOptions, lead_warning, walltime_seconds
from parcomp.runtime.errors import ConfigError, KernelSignatureError
from parcomp.runtime.numba_jit import check_arity, kernel_error_message
from parcomp.runtime.ranks import format_ranks
from parcomp.runtime.subcomm import check_tags, tag_upper_bound
from parcomp.stencils.spec import make_spec


def kernel(u, out, alpha):
    pass


@pytest.mark.parametrize(
    ("ranks", "text"),
    [
        ([3], "rank 3"),
        ([0, 1, 2], "ranks 0-2"),
        ([5, 0, 1, 2], "ranks 0-2, 5"),
        ([1, 3, 4, 7, 8, 9], "ranks 1, 3-4, 7-9"),
    ],
)
def test_format_ranks(ranks, text):
    assert format_ranks(ranks) == text


def test_spec_defaults_and_roles():
    spec = make_spec(kernel, 1, False, None, None)
    assert (spec.reads, spec.writes, spec.params) == (("u",), ("out",), ("u", "out", "alpha"))
    assert [spec.role(p) for p in spec.params] == ["read", "write", "param"]
    assert spec.radius_for(3) == (1, 1, 1)
    per_axis = make_spec(kernel, (2, 0), True, ("u",), ("out",))
    assert per_axis.radius_for(2) == (2, 0)
    with pytest.raises(Exception, match="has 2 entries but the fields have 3 axes"):
        per_axis.radius_for(3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": -1}, "radius must be >= 0"),
        ({"radius": True}, "radius must be an int"),
        ({"radius": 1.5}, "radius must be an int"),
        ({"corners": "yes"}, "corners must be True or False"),
        ({"reads": ("x",)}, "not parameters of the kernel"),
        ({"writes": ()}, "names no output"),
        ({"reads": ("u", "u")}, "distinct parameter names"),
        ({"reads": ("u",), "writes": ("u",)}, "in place"),
    ],
)
def test_bad_declarations(kwargs, match):
    args = {"radius": 1, "corners": False, "reads": None, "writes": None, **kwargs}
    with pytest.raises(KernelSignatureError, match=match):
        make_spec(kernel, args["radius"], args["corners"], args["reads"], args["writes"])


def test_arity():
    check_arity(kernel, 3)
    with pytest.raises(
        KernelSignatureError, match=r"takes 3 argument\(s\) \(u, out, alpha\), got 2"
    ):
        check_arity(kernel, 2)


def test_kernel_error_message_is_short():
    numba_text = "\n".join(
        [
            "Failed in nopython mode pipeline (step: nopython frontend)",
            "No implementation of function Function(<built-in function getitem>) found for signature:",
            " ",
            " >>> getitem(float64, Literal[int](1))",
            " ",
            "There are 22 candidate implementations:",
            " - Of which 22 did not match due to:",
            " Overload of function 'getitem': File: <numerous>: Line N/A.",
            "   With argument(s): '(float64, int64)':",
            "  No match.",
            "",
            "During: typing of intrinsic-call at k.py (12)",
            "",
            'File "k.py", line 12:',
            "def k2(u, out, a):",
            "    out[0] = u[0] + a[1]",
            "    ^",
            "",
            "During: Pass nopython_type_inference",
        ]
        * 3  # Numba repeats itself; the message must not
    )
    text = kernel_error_message(kernel, ("array(float64, 1d, C)",) * 2 + ("float64",), numba_text)
    lines = text.splitlines()
    assert len(lines) <= 12, text
    assert lines[0].startswith("kernel 'kernel' does not compile for the arguments given (u=")
    assert ">>> getitem(float64, Literal[int](1))" in text
    assert 'File "k.py", line 12:' in text and "out[0] = u[0] + a[1]" in text
    assert "candidate" not in text and "During:" not in text


def test_parse_real_faulthandler_dump():
    def inner():
        with tempfile.TemporaryFile("w+") as fh:
            faulthandler.dump_traceback(fh, all_threads=True)
            fh.seek(0)
            return fh.read()

    threads = parse_faulthandler(inner())
    assert threads, "no thread parsed"
    main = threads[0]
    assert main[-1].func == "inner" and main[-2].func == "test_parse_real_faulthandler_dump"
    assert all(isinstance(f, Frame) and f.line > 0 for f in main)


def test_grouping_of_identical_stacks():
    watch = HangWatch(4)
    try:
        dump_a = (
            'Current thread 0x1 (most recent call first):\n  File "/x/job.py", line 9 in <module>\n'
        )
        dump_b = (
            'Current thread 0x2 (most recent call first):\n  File "/x/halo.py", line 5 in wait\n'
            '  File "/x/job.py", line 10 in <module>\n'
        )
        text = watch.format({0: dump_a, 1: dump_b, 2: dump_b})
    finally:
        watch.close()
    assert text.count("--- ranks 1-2:") == 1 and text.count("--- rank 0:") == 1, text
    assert "blocked at /x/halo.py:5 in wait" in text
    assert "--- rank 3: no heartbeat" in text  # no stack from it, said so


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 600), ("05:30", 330), ("01:00:00", 3600), ("1-00", 86400), ("1-02:03:04", 93784)],
)
def test_walltime_seconds(text, seconds):
    assert walltime_seconds(text) == seconds


def test_signal_lead_warnings():
    assert lead_warning(SlurmOptions(script="a.py", time="01:00:00", signal_lead=60)) is None
    long = lead_warning(SlurmOptions(script="a.py", time="00:01:00", signal_lead=90))
    assert long and "not shorter than the walltime" in long
    half = lead_warning(SlurmOptions(script="a.py", time="00:10:00", signal_lead=400))
    assert half and "more than half" in half


def test_tag_bound_checked():
    bound = tag_upper_bound()
    assert bound >= 32767  # the MPI standard's minimum
    check_tags(3**4 - 1, "a 4-d halo exchange")
    with pytest.raises(ConfigError, match="MPI_TAG_UB"):
        check_tags(bound + 1, "something huge")


def test_reach_inference():
    from parcomp.kernels import heat_step_2d, heat_step_3d, life_step
    from parcomp.stencils.reach import infer_reach

    heat = infer_reach(heat_step_2d.py_func, ["u"])["u"]
    assert heat.offsets == {0: 1, 1: 1} and heat.diagonal is None
    assert infer_reach(heat_step_3d.py_func, ["u"])["u"].offsets == {0: 1, 1: 1, 2: 1}
    life = infer_reach(life_step.py_func, ["u"])["u"]
    assert life.diagonal is not None and life.offsets == {0: 1, 1: 1}

    def odd(u, v, out, k):
        for i in range(2, u.shape[0] - 2):
            m = i * 2
            out[i] = u[i + 2] + u[m] + u[0] + v[i - 1] + 2 + u[i]  # u[m], u[0]: not provable

    reach = infer_reach(odd, ["u", "v"])
    assert reach["u"].offsets == {0: 2} and reach["u"].widest[0] == "u[i + 2]"
    assert reach["v"].offsets == {0: 1}
    assert infer_reach(eval("lambda u, out: None"), ["u"]) == {}  # no source: nothing proven


def test_the_watchdog_thread_of_the_real_module_is_left_out():
    # on another node the watchdog thread writes the dump: its frames, at the module's real
    # path, must never be the stack a hang report shows (it was, after the module moved)
    import parcomp.runtime.watchdog as watchdog
    from parcomp.launch.hang import parse_faulthandler

    dump = (
        "Current thread 0x00007f0000000001 (most recent call first):\n"
        f'  File "{watchdog.__file__}", line 223 in watch\n'
        '  File "/usr/lib/python3.11/threading.py", line 982 in run\n'
        "\n"
        "Thread 0x00007f0000000002 (most recent call first):\n"
        '  File "/job/hang.py", line 12 in stuck_here\n'
        '  File "/job/hang.py", line 24 in main\n'
    )
    threads = parse_faulthandler(dump)
    assert [[f.func for f in t] for t in threads] == [["main", "stuck_here"]]
