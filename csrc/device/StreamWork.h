// Streams on tfmbs: which stream is current on each thread, and the work
// queued on streams.
//
// Each stream runs its work in order. Work that can run apart from the
// calling thread goes on the current stream's queue, a worker thread of its
// own (fabric::TaskQueue): fabric ops on side streams, and non_blocking
// copies between pinned host memory and the device on any stream. Every
// other op runs on the calling thread, after the work queued on its current
// stream (await_current_stream, called wherever a kernel reaches device
// memory), so each stream sees its own work in order, as on CUDA; work on
// two streams overlaps until events or synchronize order it. The default
// stream queues only non_blocking copies: the fabric ops that most programs
// run on it stay on the calling thread, without a hand-off.
//
// Queued work holds the tensors it uses, so a block it reads or writes is
// not freed, hence not reused, before that work has run: what CUDA's
// record_stream asks for holds for every tensor. (What frees a storage's
// memory while the storage lives, a resize, first settles the device's
// streams.) A failure in queued work is raised once by the next wait on its
// stream (an op on it, its synchronize, an event on it, the device's
// synchronize), and once more on each stream that waited for that work
// before then, since what such a stream reads next may be the failed
// work's output.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <functional>
#include <memory>

#include "fabric/task_queue.h"

namespace tfmbs {

// The calling thread's current stream of `device` (0: the default stream).
c10::StreamId current_stream_id(c10::DeviceIndex device);
// Makes `id` current on the calling thread; returns the previous one.
c10::StreamId exchange_stream_id(c10::DeviceIndex device, c10::StreamId id);
// A stream id never handed out before (1, 2, ...).
c10::StreamId new_stream_id();
// Whether any stream has had work queued (a forked child has no workers).
bool stream_workers_started();

// Whether work for `device` should go on the current stream's queue rather
// than run here: the current stream is a side stream (any stream, if
// `default_stream_too`) and this thread is not a stream worker already.
bool queues_work(c10::DeviceIndex device, bool default_stream_too);
// A point in a stream's work: reached once everything queued on the stream
// before it has run. A mark without a queue is reached.
struct StreamMark {
  std::shared_ptr<fabric::TaskQueue> queue;
  fabric::TaskId task = 0;
  c10::DeviceIndex device = 0;  // the stream whose work it marks
  c10::StreamId stream = 0;
};

// Queues `work` on the current stream of `device`.
void queue_work(c10::DeviceIndex device, std::function<void()> work);
// Queues `work` on stream `id` of `device`; the mark is reached once it ran.
StreamMark queue_work_on(c10::DeviceIndex device, c10::StreamId id, std::function<void()> work);

// Returns once the work queued on the calling thread's current stream of
// `device` has run (raising its failure, if any). Free when nothing is
// queued anywhere; a no-op on a stream worker.
void await_current_stream(c10::DeviceIndex device);
// The same, for every device.
void await_current_streams();

// The point after the work queued on stream `id` so far.
StreamMark mark_stream(c10::DeviceIndex device, c10::StreamId id);
bool mark_reached(const StreamMark& mark);
// The calling thread waits for `mark` (raising the failure of the work it
// marks).
void await_mark(const StreamMark& mark);
// Stream `id` of `device` waits for `mark` before its later work runs.
void stream_wait_mark(c10::DeviceIndex device, c10::StreamId id, const StreamMark& mark);

bool stream_idle(c10::DeviceIndex device, c10::StreamId id);
void synchronize_stream(c10::DeviceIndex device, c10::StreamId id);
void synchronize_streams(c10::DeviceIndex device);
// Waits for every stream of `device` without raising their failures (for
// code that must know no queued work still uses memory: a resize, an
// allocation that failed). False, at once, when nothing is queued anywhere
// or on a stream worker.
bool settle_streams(c10::DeviceIndex device);

// How the calling thread blocks while it waits for a worker: the Python
// module installs one that releases the GIL, which queued work may need.
using BlockingWait = void (*)(const std::function<void()>& wait);
void set_blocking_wait(BlockingWait wait);

}  // namespace tfmbs
