"""egovlm.train"""
