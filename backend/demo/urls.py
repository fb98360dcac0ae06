from django.urls import path

from backend.demo import views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    path("demo/uploads/", views.uploads_fragment, name="uploads"),
    path("demo/uploads/<str:upload_id>/download/", views.download, name="download"),
    path("login/", views.DemoLoginView.as_view(), name="login"),
    path("logout/", views.DemoLogoutView.as_view(), name="logout"),
]
