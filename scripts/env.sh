# Environment every lune process here needs (sourced by the Makefile and CI).
export VLLM_ENABLE_V1_MULTIPROCESSING=${VLLM_ENABLE_V1_MULTIPROCESSING:-0}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# OMP_WAIT_POLICY is left to OpenMP's default: on an idle machine spinning threads make a teaching
# step 15 % faster than PASSIVE (0.25 s vs 0.29 s); on a machine shared with other jobs set
# OMP_WAIT_POLICY=PASSIVE (2.85 s -> 0.46 s per step seen there). The tests leave it alone too.
