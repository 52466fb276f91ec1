"""A trader's tick recording: a tick listener that appends to a ``TickRecorder``, and its drop count.

The tick thread only appends to the recorder's deque (~50 ns); a writer
thread writes the Parquet files (``kit.store.recording``).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RecordingTap:
    def __init__(self, dispatcher, tick_listeners):
        self._dispatcher = dispatcher
        self._listeners = tick_listeners
        self.recorder = None
        self._dropped_at_start = 0

    def start(self, path, **options):
        from kit.store.recording import TickRecorder
        if self.recorder is None:
            self.recorder = TickRecorder(path, **options).start()
            self._dropped_at_start = self._dispatcher.dropped
            self._listeners.add(self.recorder.append)
        return self.recorder

    def stop(self):
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return None
        self._listeners.remove(recorder.append)
        recorder.stop()
        if recorder.stats["pending"]:   # a tick thread was inside the old listener tuple
            recorder.flush()
        recorder.dropped_while_recording = self._dispatcher.dropped - self._dropped_at_start
        if recorder.dropped_while_recording:
            log.warning("the queue dropped %d ticks while recording to %s: the strategy never saw them "
                        "and they are not in the recording", recorder.dropped_while_recording, recorder.path)
        return recorder
