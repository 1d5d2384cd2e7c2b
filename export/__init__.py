"""egovlm.export"""
