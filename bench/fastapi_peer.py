"""The benchmark's FastAPI peer: the service's benchmarked routes, as FastAPI's tutorial teaches.

What a user would build instead of this service: FastAPI and SQLModel, written the way
FastAPI's own SQL tutorial (https://fastapi.tiangolo.com/tutorial/sql-databases/) shows it,
with a table model and public/create/update models, `create_engine`, a session per request
from a dependency, plain `def` endpoints and response models. It is deliberately not
optimised: it measures what that path gives, not what an expert could squeeze from FastAPI.
It answers the benchmark's routes with the service's JSON shapes, from the `todos` table
the service created, on the database named by DATABASE_URL (a SQLAlchemy URL). Serve it as
FastAPI's docs recommend for production, e.g. `fastapi run --workers 2`, which is uvicorn:

    uvicorn bench.fastapi_peer:app --workers 2
"""

import os
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from sqlmodel import Field, Session, SQLModel, create_engine, select


def utcnow() -> datetime:
    return datetime.now(UTC)


class TodoBase(SQLModel):
    title: str = Field(min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=120)
    completed: bool = False
    deadline_at: datetime | None = None


class Todo(TodoBase, table=True):
    __tablename__ = "todos"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TodoPublic(TodoBase):
    id: int
    created_at: datetime
    updated_at: datetime


class TodoCreate(TodoBase):
    pass


class TodoUpdate(SQLModel):
    title: str | None = Field(default=None, min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=120)
    completed: bool | None = None
    deadline_at: datetime | None = None


database_url = os.environ["DATABASE_URL"]
# As the tutorial has it for SQLite: FastAPI may use a session in more than one thread.
connect_args = {"check_same_thread": False} if database_url.startswith("sqlite") else {}
engine = create_engine(database_url, connect_args=connect_args)


def get_session():
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

app = FastAPI()


@app.get("/api/v1/health")
def health(session: SessionDep):
    session.exec(select(1)).one()
    return {"status": "ok"}


@app.post("/api/v1/todos", response_model=TodoPublic, status_code=201)
def create_todo(todo: TodoCreate, session: SessionDep, response: Response):
    db_todo = Todo.model_validate(todo)
    session.add(db_todo)
    session.commit()
    session.refresh(db_todo)
    response.headers["Location"] = f"/api/v1/todos/{db_todo.id}"
    return db_todo


@app.get("/api/v1/todos", response_model=list[TodoPublic])
def read_todos(
    session: SessionDep,
    completed: bool | None = None,
    window: Annotated[int | None, Query(ge=0, le=36500)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
):
    statement = select(Todo).order_by(Todo.id)
    if completed is not None:
        statement = statement.where(Todo.completed == completed)
    if window is not None:
        due = datetime.now(UTC) + timedelta(days=window)
        statement = statement.where(Todo.deadline_at != None, Todo.deadline_at <= due)  # noqa: E711
    if limit is not None:
        statement = statement.limit(limit)
    return session.exec(statement).all()


@app.get("/api/v1/todos/{todo_id}", response_model=TodoPublic)
def read_todo(todo_id: int, session: SessionDep):
    todo = session.get(Todo, todo_id)
    if not todo:
        raise HTTPException(status_code=404, detail="Todo not found")
    return todo


@app.put("/api/v1/todos/{todo_id}", response_model=TodoPublic)
def update_todo(todo_id: int, todo: TodoUpdate, session: SessionDep):
    todo_db = session.get(Todo, todo_id)
    if not todo_db:
        raise HTTPException(status_code=404, detail="Todo not found")
    todo_data = todo.model_dump(exclude_unset=True)
    todo_db.sqlmodel_update(todo_data, update={"updated_at": utcnow()})
    session.add(todo_db)
    session.commit()
    session.refresh(todo_db)
    return todo_db
