/*
 * The liburcu-memb peer of the `rcu-read` scenario (src/scenarios/rcu_read.rs).
 *
 * _LGPL_SOURCE selects liburcu's inline read side: urcu_memb_read_lock(),
 * rcu_dereference() and urcu_memb_read_unlock() expand to the static inline
 * functions of urcu/static/urcu-memb.h, as shrinker-rcu's read side is inlined
 * into the Rust loop. The whole timed loop runs here, one call per thread and
 * timed run, so no FFI call is paid per operation. Its shape mirrors the
 * harness's time_ops(): BATCH operations, then a relaxed load of the stop flag.
 */
#define _LGPL_SOURCE
#include <stdint.h>
#include <urcu/urcu-memb.h>

/* The protected object: shrinker-bench's Payload, #[repr(C)] on the Rust side. */
struct payload {
	uint64_t value;
};

/*
 * What the Rust variants hand to black_box: `ptr.load(..).map(|p| p.value)`,
 * an Option<u64>, laid out as {discriminant, value}. The same 16 bytes here,
 * so both sides do the same work around the read side.
 */
struct option_u64 {
	uint64_t some;
	uint64_t value;
};

/* Rust's core::hint::black_box: the value goes to memory and an empty asm
 * block with a memory clobber reads it, so the compiler must compute it. */
static inline void black_box_option_u64(struct option_u64 v)
{
	__asm__ __volatile__("" : : "r"(&v) : "memory");
}

void shrinker_bench_urcu_memb_register_thread(void)
{
	urcu_memb_register_thread();
}

void shrinker_bench_urcu_memb_unregister_thread(void)
{
	urcu_memb_unregister_thread();
}

/*
 * Read `*ptr` in read-side sections, `batch` at a time, until `*stop` (a Rust
 * AtomicBool, read with a relaxed load) is set after a batch. Returns the
 * number of sections. The calling thread must be registered.
 */
uint64_t shrinker_bench_urcu_memb_read_loop(struct payload *const *ptr, const uint8_t *stop,
					    uint64_t batch)
{
	uint64_t ops = 0;

	for (;;) {
		for (uint64_t i = 0; i < batch; i++) {
			struct payload *p;

			struct option_u64 v = { 0, 0 };

			urcu_memb_read_lock();
			p = rcu_dereference(*ptr);
			if (p) {
				v.some = 1;
				v.value = p->value;
			}
			black_box_option_u64(v);
			urcu_memb_read_unlock();
		}
		ops += batch;
		if (__atomic_load_n(stop, __ATOMIC_RELAXED))
			break;
	}
	return ops;
}
