// The worker pool's fork-join, in wasm so a dispatch costs a few atomics rather than a postMessage.
//
// Workers (../runtime.ts) sit in worker_wait(), waiting on the `wake` futex. parallel_for() publishes a job
// (function, task count) and wakes them; every thread, the caller included, claims tasks one at a time and
// the caller returns once all are done. A claim is a compare-exchange on `ticket` = generation << 32 | next
// task, so a worker that wakes late for an old job can never claim a task of the next one. The job's
// function and task count are kept per generation parity (slot[gen & 1]): a thread reads them before its
// claim, and if the claim succeeds the ticket still carried its generation, so the next-but-one job (the
// only one that rewrites that slot) cannot have been published yet, and what it read was its own job's.
#include "common.h"

typedef struct {
  task_fn fn;
  int ntasks;
} Slot;

typedef struct {
  uint64_t ticket;
  Slot slot[2];
  int done;
  int wake;
  int quit;
  int failed;
} Job;

static Job job;
static uint32_t generation;

// Tasks each thread has run (diagnostics: shows the pool's work split).
static int task_count[64];
EXPORT int pool_tasks_run(int tid) { return task_count[tid & 63]; }
static int n_threads = 1;
static char* scratch_base;
static int scratch_size;

// Spins before a waiting thread sleeps on its futex: a few microseconds, about the host's work between two
// kernels of a step. Longer spins cost more than they save where other processes want the cores: a spinning
// thread takes the time slice a descheduled worker needs to finish the task everyone waits for.
#define SPINS 4000

extern unsigned char __heap_base;

// First byte past the linker's stack and data: where the host's allocator starts.
EXPORT uintptr_t heap_base(void) { return (uintptr_t)&__heap_base; }

EXPORT void pool_init(int threads, char* scratch_addr, int scratch_per_thread) {
  n_threads = threads < 1 ? 1 : threads;
  scratch_base = scratch_addr;
  scratch_size = scratch_per_thread;
}

int pool_threads(void) { return n_threads; }
float* scratch(int tid) { return (float*)(scratch_base + (size_t)tid * scratch_size); }
int scratch_bytes(void) { return scratch_size; }

int split_count(double work, double grain, int max_tasks) {
  double n = work / grain;
  if (n < 1) return 1;
  if (n > max_tasks) return max_tasks;
  return (int)n;
}

// Claim and run tasks of generation `gen` until none is left.
static void run_tasks(uint32_t gen, int tid) {
  for (;;) {
    uint64_t v = __atomic_load_n(&job.ticket, __ATOMIC_SEQ_CST);
    if ((uint32_t)(v >> 32) != gen) return;
    int t = (int)(uint32_t)v;
    const volatile Slot* slot = &job.slot[gen & 1];
    int n = slot->ntasks;
    task_fn fn = slot->fn;
    if (t >= n) return;
    if (!__atomic_compare_exchange_n(&job.ticket, &v, v + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) continue;
    fn(t, tid);
    task_count[tid & 63]++;
    if (__atomic_add_fetch(&job.done, 1, __ATOMIC_SEQ_CST) == n) {
      __builtin_wasm_memory_atomic_notify(&job.done, 1);
    }
  }
}

// Per worker: the wake count it last served (each worker touches only its own entry).
static int seen_wake[256];

// A worker serves jobs from a JS loop, `while (worker_wait(tid)) worker_run(tid);`, not from one endless wasm
// call: V8 caches a shared memory's size in a running wasm frame (and may inline the task functions into
// it), so a frame that never returns keeps the size it had when it started and traps on storages the host
// allocated after a later memory.grow. A fresh call per job sees the current size.
EXPORT void worker_init(int tid) { seen_wake[tid & 255] = __atomic_load_n(&job.wake, __ATOMIC_SEQ_CST); }

// Wait for the next job: 1 when there is one to serve, 0 when the pool quits.
EXPORT int worker_wait(int tid) {
  int seen = seen_wake[tid & 255], w, spins = 0;
  while ((w = __atomic_load_n(&job.wake, __ATOMIC_SEQ_CST)) == seen) {
    if (++spins >= SPINS) __builtin_wasm_memory_atomic_wait32(&job.wake, seen, -1);
  }
  seen_wake[tid & 255] = w;
  return !__atomic_load_n(&job.quit, __ATOMIC_SEQ_CST);
}

// Claim and run tasks of the current job until none is left.
EXPORT void worker_run(int tid) {
  run_tasks((uint32_t)(__atomic_load_n(&job.ticket, __ATOMIC_SEQ_CST) >> 32), tid);
}

// A worker's task trapped (a bug): release the caller, which would otherwise wait for it forever, and make
// pool_failed() report it from now on.
EXPORT void pool_fail(void) {
  __atomic_store_n(&job.failed, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&job.done, -1);
}

EXPORT int pool_failed(void) { return __atomic_load_n(&job.failed, __ATOMIC_SEQ_CST); }

// Ask every worker to leave its loop (the backend's dispose).
EXPORT void pool_quit(void) {
  __atomic_store_n(&job.quit, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&job.wake, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&job.wake, -1);
}

void parallel_for(task_fn fn, int ntasks, int threads) {
  if (threads > n_threads) threads = n_threads;
  if (threads <= 1 || ntasks <= 1 || __atomic_load_n(&job.failed, __ATOMIC_SEQ_CST)) {
    for (int t = 0; t < ntasks; t++) fn(t, 0);
    return;
  }
  uint32_t gen = ++generation;
  job.slot[gen & 1].fn = fn;
  job.slot[gen & 1].ntasks = ntasks;
  __atomic_store_n(&job.done, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job.ticket, (uint64_t)gen << 32, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&job.wake, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&job.wake, threads - 1);
  run_tasks(gen, 0);
  int spins = 0;
  int d;
  // A worker that failed (pool_fail) releases this wait; later jobs then run on the caller alone.
  while ((d = __atomic_load_n(&job.done, __ATOMIC_SEQ_CST)) < ntasks && !__atomic_load_n(&job.failed, __ATOMIC_SEQ_CST)) {
    if (++spins >= SPINS) __builtin_wasm_memory_atomic_wait32(&job.done, d, -1);
  }
}
