"""Seed: tasks docs, "Class Methods" — instance, class and static methods as tasks.

The seed's methods only `pass`; here they also print, so the output shows that each one ran.
"""
from asyncflow import task


class MyClass:

    @task
    def my_instance_method(self):
        print(f"instance method called on {type(self).__name__}")


    @classmethod
    @task
    def my_class_method(cls):
        print(f"class method called on {cls.__name__}")


    @staticmethod
    @task
    def my_static_method():
        print("static method called")


MyClass().my_instance_method()
MyClass.my_class_method()
MyClass.my_static_method()
