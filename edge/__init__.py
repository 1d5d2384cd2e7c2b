"""egovlm.edge"""
