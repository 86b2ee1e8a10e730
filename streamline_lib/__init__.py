"""streamline_lib"""
