"""The demo: a detector on a webcam, a video, a stream, an image or a folder, drawn, written and/or shown.

``loop``: the loop, the window, the FPS meter and the report; ``outputs``: the sinks, the detection files and the
overwrite refusal. Its sources are ``detector.inference.sources``'s (``open_source``). Modules of the package
import from the submodules; the names below are for users.
"""
from detector.demo.loop import DemoOptions, DemoReport, run_demo
from detector.demo.outputs import open_results, open_sink
from detector.inference.sources import open_source

__all__ = ["DemoOptions", "DemoReport", "open_results", "open_sink", "open_source", "run_demo"]
