"""GPU tests: the `gpu` and `multi_gpu` markers are registered here too, so these run under any pytest config."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (and vLLM/SGLang where named); skipped elsewhere")
    config.addinivalue_line("markers", "multi_gpu: needs several GPUs")
