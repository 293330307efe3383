// The simulator's own proof (run by selfcheck.sh, no cargo): real kernels from kernels/*.cu,
// compiled exactly as the simulation build compiles them, checked against host loops, then the
// cases the simulator exists for: a missing barrier gives a wrong answer, a bad access, a bad
// warp sync or a deadlock fails the launch with a message (never a hang or a crash), and the
// thread is usable again afterwards. Ends with launch timings.
//
// This unit holds main, which runs the check groups; the harness is selfcheck.h and the groups
// are in selfcheck_ops.cpp (real kernels, timings), selfcheck_sync.cpp (barriers, warp
// operations, the schedule), selfcheck_proofs.cpp (the cases the simulator exists for) and
// selfcheck_faults.cpp (every other failure, OS threads).
#include "selfcheck.h"

std::atomic<int> g_failures{0}, g_checks{0};

int main(int argc, char** argv) {
    test_fault_outside_run_chains();
    test_add();
    test_dot_and_finish();
    test_mixed_op();
    test_batch_norm();
    test_dwconv();
    test_dwconv_bwd_weight();
    test_shared_and_barriers();
    test_shuffles();
    test_votes();
    test_bf16();
    test_atomics_and_determinism();
    test_schedule_order();
    test_dynamic_shared();
    proof_a_missing_sync();
    proof_b_oob_write();
    proof_c_fresh_nan();
    proof_d_shuffle_after_exit();
    proof_e_deadlock();
    proof_f_recovery();
    test_more_errors();
    test_parallel_threads();
    if (!(argc > 1 && strcmp(argv[1], "--no-bench") == 0)) timings();
    printf("%s: %d checks, %d failed\n", g_failures ? "FAILED" : "OK", g_checks.load(), g_failures.load());
    return g_failures ? 1 : 0;
}
