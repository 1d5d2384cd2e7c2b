"""egovlm.benchmarks"""
